"""/var/runtime/bootstrap.py: builds sys.path as the Lambda Python runtime does, then runs awslambdaric."""

import os
import site
import sys


def main() -> None:
    task_root = os.environ["LAMBDA_TASK_ROOT"]
    runtime_dir = os.environ["LAMBDA_RUNTIME_DIR"]
    opt = os.environ.get("LAMBDARUN_OPT_DIR", "/opt")  # set only when running without the sandbox view
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    layer_dirs = [os.path.join(opt, "python", "lib", version, "site-packages"), os.path.join(opt, "python")]
    if "PYTHONPATH" not in os.environ:
        # sys.path[0] is this script's directory; Lambda's order is task root, layers, then the interpreter's.
        rest = [p for p in sys.path[1:] if p not in (task_root, *layer_dirs)]
        sys.path[:] = [task_root, *layer_dirs, *rest, runtime_dir]
        os.environ["PYTHONPATH"] = runtime_dir
    else:
        for path in reversed([task_root, *layer_dirs]):
            if path not in sys.path:
                sys.path.insert(0, path)
    for path in (task_root, *layer_dirs):  # .pth files in code and layers work, as on AWS
        if os.path.isdir(path):
            site.addsitedir(path)
    from awslambdaric import __main__ as awslambdaric_main

    awslambdaric_main.main([sys.argv[0], os.environ["_HANDLER"]])


if __name__ == "__main__":
    main()
