"""Remote tracebacks name the real file and show the source line.

cloudpickle 3.1 renames the code objects it pickles ``<dynamic-code>``; actorkit
ships each code object whole, with its source lines, so a traceback reads the
same wherever the code was written: a script, ``python -c``, a notebook cell
(IPython registers cells in ``linecache`` under a name no file has).
"""

from __future__ import annotations

import textwrap

from _drivers import describe, run_python, run_script

NOTEBOOK_DRIVER = textwrap.dedent(
    '''
    import linecache
    import actorkit as ray

    # What IPython does with a cell: source in linecache under a made-up name.
    src = "def boom(x):\\n    y = x + 1\\n    raise ValueError(f'cell boom {y}')\\n"
    name = "<ipython-input-7-0123456789ab>"
    linecache.cache[name] = (len(src), None, src.splitlines(True), name)
    namespace = {}
    exec(compile(src, name, "exec"), namespace)
    boom = ray.remote(namespace["boom"])

    @ray.remote
    class Account:
        def withdraw(self, amount):
            raise KeyError(f"no funds for {amount}")

    ray.init(num_cpus=1)
    try:
        ray.get(boom.remote(1))
    except ValueError as e:
        print(e)
    try:
        ray.get(Account.remote().withdraw.remote(5))
    except KeyError as e:
        print(e)
    ray.shutdown()
    '''
)


def test_notebook_cell_and_script_method_tracebacks_show_source(tmp_path):
    proc = run_script(tmp_path, NOTEBOOK_DRIVER)
    assert proc.returncode == 0, describe(proc)
    out = proc.stdout
    assert 'File "<ipython-input-7-0123456789ab>", line 3, in boom' in out, out
    assert "raise ValueError(f'cell boom {y}')" in out, out
    assert "driver.py" in out and "in withdraw" in out, out
    assert 'raise KeyError(f"no funds for {amount}")' in out, out
    assert "<dynamic-code>" not in out, out


def test_python_dash_c_traceback_shows_source(tmp_path):
    code = textwrap.dedent(
        """
        import actorkit as ray

        @ray.remote
        def divide(a, b):
            return a / b

        ray.init(num_cpus=1)
        try:
            ray.get(divide.remote(1, 0))
        except ZeroDivisionError as e:
            print(e)
        ray.shutdown()
        """
    )
    proc = run_python(["-c", code], tmp_path)
    assert proc.returncode == 0, describe(proc)
    assert 'File "<string>", line 6, in divide' in proc.stdout, proc.stdout
    assert "return a / b" in proc.stdout, proc.stdout


def test_script_deleted_after_export_still_shows_source(tmp_path):
    # Stands for a script on another machine: the worker cannot read the file.
    source = textwrap.dedent(
        """
        import os
        import actorkit as ray

        @ray.remote
        def fail(path):
            os.remove(path)
            raise RuntimeError("after the file went away")

        ray.init(num_cpus=1)
        try:
            ray.get(fail.remote(__file__))
        except RuntimeError as e:
            print(e)
        ray.shutdown()
        """
    )
    proc = run_script(tmp_path, source)
    assert proc.returncode == 0, describe(proc)
    assert 'raise RuntimeError("after the file went away")' in proc.stdout, proc.stdout
