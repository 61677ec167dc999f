"""Build the Cython example in place:  python setup.py build_ext --inplace

Needs Cython and a C compiler (``pip install cython``).  actorkit does not
compile or distribute extensions: build them on every machine that runs them.
"""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    name="actorkit-cython-example",
    ext_modules=cythonize(
        [Extension("cython_simple", ["cython_simple.pyx"])],
        compiler_directives={"language_level": 3},
    ),
    zip_safe=False,
)
