"""setup.py - `pip install .` of the ferry Python package (setuptools only, no network).

Builds the extension ferry._ferry from python/src/pyferry.c and libferry's own sources (src/),
linked into the one module, so the package needs no installed libferry. It uses zlib, libjpeg-turbo
and libspng when their headers are found (Debian: zlib1g-dev libjpeg62-turbo-dev libspng-dev; without
one, that format says it is unsupported), and numpy's headers.

On Debian 12, whose python3 is "externally managed" and where pip cannot reach PyPI for build
dependencies, install into a virtual environment that sees Debian's numpy, without build isolation:

    /usr/bin/python3 -m venv --system-site-packages .venv
    .venv/bin/pip install --no-build-isolation .

(or, for the user's own site-packages: /usr/bin/python3 -m pip install --user --no-build-isolation
--break-system-packages .). CMake builds the same module into build/python for the tests.
"""
import glob
import os
import re

import numpy
from setuptools import Extension, setup

here = os.path.dirname(os.path.abspath(__file__))
os.chdir(here)


def version():
    with open(os.path.join("include", "ferry.h")) as f:
        return re.search(r'#define FERRY_VERSION_STRING "([^"]+)"', f.read()).group(1)


def have_header(name):
    return any(os.path.exists(os.path.join(d, name)) for d in ("/usr/include", "/usr/local/include"))


layers = ["platform", "base", "core", "ops", "io", "image"]
sources = ["python/src/pyferry.c"] + sorted(s for layer in layers for s in glob.glob(f"src/{layer}/*.c"))
macros = [("FERRY_STATIC", None), ("_POSIX_C_SOURCE", "200809L")]
libraries = ["m", "pthread"]
if have_header("zlib.h"):
    libraries.append("z")
if have_header("jpeglib.h"):
    macros.append(("FERRY_HAVE_JPEG", None))
    libraries.append("jpeg")
if have_header("spng.h"):
    macros.append(("FERRY_HAVE_SPNG", None))
    libraries.append("spng")
flags = ["-std=c11", "-O2", "-fvisibility=hidden", "-fno-strict-aliasing"]
if os.uname().machine in ("x86_64", "AMD64"):
    flags.append("-msse4.2")

# Build products go under build/pip (CMake's default tree is build/), not beside the sources.
scratch = os.path.join("build", "pip")
os.makedirs(scratch, exist_ok=True)

setup(
    name="ferry",
    version=version(),
    description="Input pipelines for machine-learning training: tf.data's model run by C threads",
    license="Apache-2.0",
    packages=["ferry"],
    package_dir={"": "python"},
    python_requires=">=3.9",
    install_requires=["numpy"],
    ext_modules=[Extension("ferry._ferry", sources=sources, include_dirs=["include", "src", numpy.get_include()],
                           define_macros=macros, libraries=libraries, extra_compile_args=flags)],
    options={"build": {"build_base": scratch}, "egg_info": {"egg_base": scratch}},
)
