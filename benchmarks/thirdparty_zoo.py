"""Export the third-party ResNet-20 as a zoo ``resnet20`` state dict, so ``train --init`` can fine-tune it.

    python -m benchmarks.thirdparty_zoo ~/.cache/tsc-snn/thirdparty-resnet20-zoo.safetensors

The weights stay outside the repository (they are a test fixture, not part of the product); the zoo model
has the same layers under torchvision-style names, and its normalisation buffers take the third party's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from safetensors.torch import save_file

from benchmarks.thirdparty import load_resnet20
from converter.training.models import build_model

RENAMES = {"mean": "normalize.mean", "std": "normalize.std"}


def main() -> None:
    """Write the renamed state dict and check the zoo model loads it exactly."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    out = ap.parse_args().out
    state = {
        RENAMES.get(k, k.replace("linear.", "fc.")): v.contiguous()
        for k, v in load_resnet20().state_dict().items()
    }
    build_model("resnet20").load_state_dict(state, strict=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
