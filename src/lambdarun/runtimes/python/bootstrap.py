"""/var/runtime/bootstrap.py: sets up sys.path as Lambda's Python runtimes do (SPEC 5.3), then runs awslambdaric.

The runtime client is imported first, from this script's own directory (sys.path[0] is /var/runtime), so that a
package of the same name in the function's code cannot replace it. When PYTHONPATH is unset, the function's code,
the layers' two directories and the interpreter's site-packages go in front:
`[/var/task, /opt/python/lib/pythonX.Y/site-packages, /opt/python, /var/lang/lib/pythonX.Y/site-packages,
/var/runtime, <the interpreter's own>...]`; then PYTHONPATH becomes /var/runtime for child processes.
"""

import os
import site
import sys

from awslambdaric import __main__ as awslambdaric_main


def main() -> None:
    task_root = os.environ["LAMBDA_TASK_ROOT"]
    opt = os.environ.get("LAMBDARUN_OPT_DIR", "/opt")  # set only when running without the sandbox view
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    layer_site = os.path.join(opt, "python", "lib", version, "site-packages")
    layer_python = os.path.join(opt, "python")
    pythonpath_set = "PYTHONPATH" in os.environ
    if not pythonpath_set:
        lang_site = os.path.join(sys.prefix, "lib", version, "site-packages")  # /var/lang/…
        sys.path[0:0] = [layer_site, layer_python, lang_site]
    sys.path.insert(0, task_root)
    # .pth files in the code (and, without PYTHONPATH, in the layers) work, as on AWS.
    site.addsitedir(task_root)
    if not pythonpath_set:
        site.addsitedir(layer_site)
        site.addsitedir(layer_python)
        os.environ["PYTHONPATH"] = os.environ["LAMBDA_RUNTIME_DIR"]
    awslambdaric_main.main([task_root, os.environ["_HANDLER"]])


if __name__ == "__main__":
    main()
