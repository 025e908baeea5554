"""Write a trained OSEDiff generator in the release's ``osediff.pkl`` layout, for tools that read it.

    python -m osir.methods.osediff.export -opt options/osediff.yml --unet experiments/<name>/models/net_unet_<iter>.safetensors \\
        --vae experiments/<name>/models/net_vae_<iter>.safetensors --output osediff.pkl
"""
from __future__ import annotations

import argparse
import sys

from osir.core.cli import run


def export(args) -> int:
    from osir.inference.load import build_method
    from osir.core.options import load_options
    opt = load_options(args.opt, [f"path.pretrained.unet={args.unet}", f"path.pretrained.vae={args.vae}"])
    method = build_method(opt)
    method.export_release(args.output)
    print(f"wrote {args.output}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m osir.methods.osediff.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("-opt", required=True, help="the OSEDiff options file of the run")
    parser.add_argument("--unet", required=True, help="net_unet_<iter>.safetensors of the run")
    parser.add_argument("--vae", required=True, help="net_vae_<iter>.safetensors of the run")
    parser.add_argument("--output", required=True)
    return run("osir", lambda: export(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
