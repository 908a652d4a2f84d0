"""Build the optional C accelerator ``rue_trio.protocol._speedups``.

All project metadata lives in pyproject.toml; this file only declares the extension.
It is optional: without a working C compiler the build prints a warning and rue_trio
installs with its pure Python fallback (see ``rue_trio/protocol/_mask.py``).
"""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class _BuildExt(build_ext):
    """Ask GCC-compatible compilers for -O3, so the masking loop is vectorized."""

    def build_extensions(self) -> None:
        if self.compiler.compiler_type == "unix":
            for ext in self.extensions:
                ext.extra_compile_args.append("-O3")
        super().build_extensions()


setup(
    ext_modules=[
        Extension(
            "rue_trio.protocol._speedups",
            sources=["rue_trio/protocol/_speedups.c"],
            optional=True,
        )
    ],
    cmdclass={"build_ext": _BuildExt},
)
