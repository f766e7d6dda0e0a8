"""Locates (or writes) the ONNX backend node test data of the installed onnx package.

Why: onnx_node_exec_test.cc checks the CPU kernels against the node tests of the
venv's (newer) onnx as well as Debian's libonnx-testdata. Recent onnx wheels ship
the test *cases* (onnx/backend/test/case/node/*.py, whose expected outputs are
computed by NumPy) but not always the serialized data directory. When the data
directory is missing, this script serializes the cases with onnx's own writer
(onnx.backend.test.cmd_tools.generate_data) into CACHE_DIR/<onnx version>/node,
once per onnx version. It prints the directory to use on its last line.

Usage: .venv/bin/python tests/onnx_node_data.py CACHE_DIR
"""

import argparse
import os
import sys
import warnings


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cache_dir", help="where to write the data when onnx lacks it")
    args = parser.parse_args()

    import onnx

    shipped = os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/node")
    if os.path.isdir(shipped) and os.listdir(shipped):
        print(shipped)
        return 0

    root = os.path.join(os.path.abspath(args.cache_dir), onnx.__version__)
    out = os.path.join(root, "node")
    stamp = os.path.join(root, "complete")
    if not os.path.exists(stamp):
        import onnx.backend.test.case.model as model_test
        import onnx.backend.test.case.node as node_test
        from onnx.backend.test import cmd_tools

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the cases' own NumPy warnings (1/0 -> inf)
            cases = node_test.collect_testcases(None)
        # generate_data writes model_test's cases; hand it the node cases instead.
        model_test.collect_testcases = lambda: cases
        cmd_tools.generate_data(argparse.Namespace(output=root))
        with open(stamp, "w") as f:
            f.write(f"{len(cases)} node cases from onnx {onnx.__version__}\n")
        print(f"wrote {len(cases)} node test cases of onnx {onnx.__version__}", file=sys.stderr)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
