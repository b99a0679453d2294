#!/usr/bin/env python3
"""Writes the MONAI parity fixtures under tests/fixtures/monai/.

Each case is a small DiNTS network built with MONAI (CPU, float32, seeded), with every
parameter randomised (instance-norm scales and shifts too, so a missing affine shows), saved
as MONAI saves it:

    <case>.pt / .safetensors   the state dict (torch.save / safetensors.torch.save_file)
    <case>_arch.pth            MONAI's architecture file: a dict of numpy arrays
    <case>_input.npy           the input patch [C, D, H, W] float32
    <case>_logits.npy          MONAI's output logits [classes, D, H, W] float32

and cases.json describes them for tests/monai_parity.rs.

Usage (from the repository root):
    python3 -m venv .venv-monai && .venv-monai/bin/pip install torch monai safetensors numpy nibabel scipy
    .venv-monai/bin/python tools/make_monai_fixtures.py

The pipeline fixture (`pancreas_pipeline_*`) runs MONAI's pancreas-bundle transforms and
SlidingWindowInferer on a crop (x 40:72, y 30:62, z 8:24) of a real CT and is written only
when that CT is present (../shared/data/totalsegmentator/tests/reference_files/
example_ct_sm.nii.gz); the crop itself is not kept (the test crops the shared file).
"""

import json
import os
import sys

import numpy as np
import torch
from monai.networks.nets.dints import DiNTS, TopologyInstance, TopologySearch
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "monai")
OUT = os.path.normpath(OUT)

# The DiNTS paper's searched architecture (MONAI's arch_code_cvpr.pth).
PAPER_A = np.array(
    [
        [1, 0, 1, 1, 1, 1, 1, 0, 1, 0],
        [1, 1, 1, 1, 0, 1, 1, 0, 1, 1],
        [1, 1, 1, 1, 1, 1, 1, 0, 1, 1],
        [1, 0, 1, 1, 1, 1, 1, 1, 1, 0],
        [1, 1, 1, 1, 0, 1, 1, 1, 1, 1],
        [1, 0, 1, 1, 1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 0, 1, 0, 1, 1, 1],
        [1, 1, 1, 1, 1, 1, 0, 0, 1, 1],
        [1, 1, 1, 1, 0, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 0, 1, 1, 1, 1, 1],
        [1, 1, 1, 0, 0, 1, 1, 1, 1, 1],
        [1, 1, 0, 0, 0, 0, 0, 1, 1, 1],
    ]
)
PAPER_C = np.array(
    [
        [1, 3, 1, 3, 2, 1, 2, 0, 1, 1],
        [1, 0, 3, 1, 0, 2, 1, 2, 4, 3],
        [3, 0, 0, 2, 1, 0, 1, 2, 1, 0],
        [4, 2, 2, 1, 2, 1, 1, 0, 1, 3],
        [1, 1, 4, 0, 0, 4, 1, 1, 1, 1],
        [2, 0, 0, 0, 4, 4, 4, 1, 1, 1],
        [4, 3, 0, 0, 2, 4, 0, 1, 0, 3],
        [1, 1, 0, 0, 3, 4, 0, 4, 1, 3],
        [1, 0, 0, 2, 0, 0, 0, 0, 1, 1],
        [1, 4, 2, 3, 4, 4, 3, 0, 3, 1],
        [2, 0, 2, 3, 0, 2, 0, 0, 3, 2],
        [4, 4, 0, 0, 1, 4, 3, 0, 2, 1],
    ]
)


def edge_levels(depths):
    """(source, target) of every edge, DiNTS order."""
    e = 3 * depths - 2
    return [((i + 1) // 3 - 1 + (i + 1) % 3, (i + 1) // 3) for i in range(e)]


def node_a_of(arch_a, depths):
    """node_a as MONAI's decode builds it: row 0 = inputs of layer 0, row l+1 = outputs."""
    levels = edge_levels(depths)
    node_a = np.zeros((arch_a.shape[0] + 1, depths), dtype=np.int64)
    for layer in range(arch_a.shape[0]):
        for e, (s, t) in enumerate(levels):
            if arch_a[layer, e]:
                node_a[layer + 1, t] = 1
                if layer == 0:
                    node_a[0, s] = 1
    return node_a


def random_arch(rng, layers, depths, must_use_all_ops):
    """A valid code: every active edge reads a node the previous layer writes."""
    levels = edge_levels(depths)
    while True:
        a = np.zeros((layers, len(levels)), dtype=np.int64)
        c = np.zeros((layers, len(levels)), dtype=np.int64)
        active = set(range(depths))
        for layer in range(layers):
            choices = [e for e, (s, _) in enumerate(levels) if s in active]
            on = [e for e in choices if rng.random() < 0.55] or [int(rng.choice(choices))]
            for e in on:
                a[layer, e] = 1
                c[layer, e] = int(rng.integers(0, 5))
            active = {levels[e][1] for e in on}
        used = set(c[a == 1].tolist())
        if not must_use_all_ops or used == {0, 1, 2, 3, 4}:
            return a, c


def randomise(net, seed):
    """Every parameter random, norms around (1, 0), so parity checks every tensor."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "log_alpha" in name:
                continue
            if p.dim() == 1 and ("norm" in name or ".mod.2." in name or ".mod.5." in name):
                if name.endswith("weight"):
                    p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(0.2 * torch.randn(p.shape, generator=g))
            else:
                fan_in = max(1, p[0].numel()) if p.dim() > 1 else 1
                p.copy_(torch.randn(p.shape, generator=g) * (1.5 / fan_in) ** 0.5)


def save_arch(path, node_a, arch_a, arch_c):
    # The layout of MONAI's search script: numpy arrays plus bookkeeping scalars.
    torch.save(
        {
            "node_a": node_a.astype(np.int64),
            "arch_code_a": arch_a.astype(np.float64),
            "arch_code_a_max": arch_a.astype(np.int64),
            "arch_code_c": arch_c.astype(np.int64),
            "iter_num": 0,
            "epochs": 1,
        },
        path,
    )


def instance(arch_a, arch_c, node_a, depths, layers, channel_mul, use_downsample, cin, classes):
    space = TopologyInstance(
        channel_mul=channel_mul,
        num_blocks=layers,
        num_depths=depths,
        use_downsample=use_downsample,
        arch_code=[arch_a, arch_c],
        device="cpu",
    )
    return DiNTS(
        dints_space=space,
        in_channels=cin,
        num_classes=classes,
        use_downsample=use_downsample,
        node_a=torch.from_numpy(node_a),
    )


def run(net, x):
    net.eval()
    with torch.no_grad():
        return net(torch.from_numpy(x)[None])[0].numpy().astype(np.float32)


def write_case(cases, name, net, x, arch, fmt, meta, state=None):
    state = net.state_dict() if state is None else state
    files = {}
    if "pt" in fmt:
        files["pt"] = f"{name}.pt"
        obj = fmt["pt"](state) if callable(fmt.get("pt")) else state
        torch.save(obj, os.path.join(OUT, files["pt"]))
    if "safetensors" in fmt:
        files["safetensors"] = f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, os.path.join(OUT, files["safetensors"]))
    if arch is not None:
        files["arch"] = f"{name}_arch.pth"
        save_arch(os.path.join(OUT, files["arch"]), *arch)
    np.save(os.path.join(OUT, f"{name}_input.npy"), x.astype(np.float32))
    y = run(net, x)
    np.save(os.path.join(OUT, f"{name}_logits.npy"), y)
    files["input"] = f"{name}_input.npy"
    files["logits"] = f"{name}_logits.npy"
    cases.append({"name": name, "files": files, **meta})
    print(f"{name}: logits {y.shape}, max |y| {np.abs(y).max():.4f}")


def main():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(2022)
    cases = []

    # 1. The DiNTS paper's code (zero node in the head at level 1), channel_mul 0.04:
    #    filters 1, 2, 5, 10, 20 (trunc matters everywhere: 1.28, 2.56, 5.12, 10.24, 20.48,
    #    and the odd width 5 splits unevenly in factorized reduce).
    node_a = node_a_of(PAPER_A, 4)
    net = instance(PAPER_A, PAPER_C, node_a, 4, 12, 0.04, True, 1, 3)
    randomise(net, 1)
    paper_net = net
    x = rng.standard_normal((1, 32, 32, 32)).astype(np.float32)
    write_case(
        cases,
        "paper_code",
        net,
        x,
        (node_a, PAPER_A, PAPER_C),
        {"pt": True},
        {"scheme": "instance", "depths": 4, "layers": 12, "use_downsample": True,
         "filters": [1, 2, 5, 10, 20], "in_channels": 1, "classes": 3},
    )

    # 2. A random instance using all five ops, 3 levels, 2 input channels, anisotropic input.
    a, c = random_arch(rng, 5, 3, True)
    node_a = node_a_of(a, 3)
    net = instance(a, c, node_a, 3, 5, 0.125, True, 2, 2)
    randomise(net, 2)
    x = rng.standard_normal((2, 16, 32, 32)).astype(np.float32)
    write_case(
        cases, "all_ops", net, x, (node_a, a, c), {"pt": True},
        {"scheme": "instance", "depths": 3, "layers": 5, "use_downsample": True,
         "filters": [4, 8, 16, 32], "in_channels": 2, "classes": 2},
    )

    # 3. A search-space checkpoint (TopologySearch + DiNTS) with decisive log_alpha. MONAI's
    #    expected logits come from its decoded instance with the search weights moved from
    #    op.ops.<op index> to op.ops.0 (how the decoded network uses the searched weights).
    search = TopologySearch(channel_mul=0.0625, num_blocks=3, num_depths=3, use_downsample=True, device="cpu")
    snet = DiNTS(dints_space=search, in_channels=1, num_classes=4, use_downsample=True)
    randomise(snet, 3)
    g = torch.Generator().manual_seed(33)
    with torch.no_grad():
        search.log_alpha_a.copy_(2.0 * torch.randn(search.log_alpha_a.shape, generator=g))
        search.log_alpha_c.copy_(torch.randn(search.log_alpha_c.shape, generator=g))
    node_a, arch_a, arch_c, _ = search.decode()
    arch_a = np.asarray(arch_a).astype(np.int64)
    arch_c = np.asarray(arch_c).astype(np.int64)
    node_a = np.asarray(node_a).astype(np.int64)
    inst = instance(arch_a, arch_c, node_a, 3, 3, 0.0625, True, 1, 4)
    search_state = snet.state_dict()
    moved = {}
    for k in inst.state_dict():
        src = k
        if ".op.ops.0." in k:
            cell = k.split(".op.ops.0.")[0]
            l, e = [int(v) for v in cell.split("(")[1].rstrip(")").split(", ")]
            src = k.replace(".op.ops.0.", f".op.ops.{int(arch_c[l, e])}.")
        moved[k] = search_state[src]
    inst.load_state_dict(moved)
    x = rng.standard_normal((1, 32, 16, 16)).astype(np.float32)
    write_case(
        cases, "search_space", inst, x, (node_a, arch_a, arch_c),
        {"pt": lambda s: {"state_dict": s}},
        {"scheme": "search_space", "depths": 3, "layers": 3, "use_downsample": True,
         "filters": [2, 4, 8, 16], "in_channels": 1, "classes": 4},
        state=search_state,
    )

    # 4. use_downsample = False, 3 levels, safetensors weights.
    a, c = random_arch(rng, 4, 3, False)
    node_a = node_a_of(a, 3)
    net = instance(a, c, node_a, 3, 4, 0.25, False, 1, 2)
    randomise(net, 4)
    x = rng.standard_normal((1, 16, 16, 32)).astype(np.float32)
    write_case(
        cases, "no_downsample", net, x, (node_a, a, c), {"safetensors": True},
        {"scheme": "instance", "depths": 3, "layers": 4, "use_downsample": False,
         "filters": [8, 16, 32], "in_channels": 1, "classes": 2},
    )
    # Without downsampling MONAI needs sides divisible by 2^3 only, not 2^4.
    x = rng.standard_normal((1, 8, 8, 24)).astype(np.float32)
    np.save(os.path.join(OUT, "no_downsample_side8_input.npy"), x)
    np.save(os.path.join(OUT, "no_downsample_side8_logits.npy"), run(net, x))
    no_downsample_net = net

    # 5. Pre-2023 key layout (op.ops.<op index>), DataParallel's `module.` prefix and a
    #    {"model": ...} wrapper, 2 levels.
    a, c = random_arch(rng, 3, 2, False)
    node_a = node_a_of(a, 2)
    net = instance(a, c, node_a, 2, 3, 0.25, True, 1, 2)
    randomise(net, 5)
    legacy = {}
    for k, v in net.state_dict().items():
        if ".op.ops.0." in k:
            cell = k.split(".op.ops.0.")[0]
            l, e = [int(s) for s in cell.split("(")[1].rstrip(")").split(", ")]
            k = k.replace(".op.ops.0.", f".op.ops.{int(c[l, e])}.")
        legacy["module." + k] = v
    x = rng.standard_normal((1, 16, 8, 8)).astype(np.float32)
    write_case(
        cases, "legacy_keys", net, x, (node_a, a, c), {"pt": lambda s: {"model": s}},
        {"scheme": "legacy_instance", "depths": 2, "layers": 3, "use_downsample": True,
         "filters": [8, 16, 32], "in_channels": 1, "classes": 2},
        state=legacy,
    )

    pipeline_fixture(cases)

    # 6. Sizes MONAI runs below its recommended multiple (its log asks for 2^(D + 1) with
    #    downsampling): multiples of the deepest level's factor, odd counts there included.
    #    The paper-code network (factor 16) on 48 x 32 x 16 leaves 3 x 2 x 1 voxels at its
    #    deepest level; the no-downsample network (factor 4) on 12 x 20 x 8 leaves 3 x 5 x 2.
    #    Drawn from their own generator so the cases above keep their inputs.
    sizes_rng = np.random.default_rng(4832)
    for name, net, shape in [
        ("paper_code_48x32x16", paper_net, (1, 48, 32, 16)),
        ("no_downsample_12x20x8", no_downsample_net, (1, 12, 20, 8)),
    ]:
        x = sizes_rng.standard_normal(shape).astype(np.float32)
        y = run(net, x)
        assert y.shape[1:] == shape[1:], f"{name}: MONAI returned {y.shape}"
        np.save(os.path.join(OUT, f"{name}_input.npy"), x)
        np.save(os.path.join(OUT, f"{name}_logits.npy"), y)
        print(f"{name}: logits {y.shape}, max |y| {np.abs(y).max():.4f}")

    # 7. An architecture that leaves the deepest of 3 levels unused: MONAI runs only the
    #    active cells, so 12 x 20 x 12 (multiples of 4, not of 8) goes through.
    levels = edge_levels(3)
    a = np.zeros((3, len(levels)), dtype=np.int64)
    c = np.zeros_like(a)
    for layer in range(3):
        for e, (src, dst) in enumerate(levels):
            if src <= 1 and dst <= 1:
                a[layer, e] = 1
                c[layer, e] = 1 + (layer + e) % 4
    node_a = node_a_of(a, 3)
    net = instance(a, c, node_a, 3, 3, 0.0625, True, 1, 2)
    randomise(net, 7)
    x = sizes_rng.standard_normal((1, 12, 20, 12)).astype(np.float32)
    write_case(
        cases, "upper_levels", net, x, (node_a, a, c), {"pt": True},
        {"scheme": "instance", "depths": 3, "layers": 3, "use_downsample": True,
         "filters": [2, 4, 8, 16], "in_channels": 1, "classes": 2},
    )
    assert np.load(os.path.join(OUT, "upper_levels_logits.npy")).shape == (2, 12, 20, 12)

    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(cases, f, indent=1)
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print(f"wrote {len(cases)} cases to {OUT}, {total / 1e6:.2f} MB")


def pipeline_fixture(cases):
    """The pancreas bundle's inference pipeline on a real CT crop with a small network."""
    ct = os.path.join(
        os.path.dirname(OUT), "..", "..", "..", "shared", "data", "totalsegmentator", "tests",
        "reference_files", "example_ct_sm.nii.gz",
    )
    ct = os.path.normpath(ct)
    if not os.path.exists(ct):
        print(f"skipping the pipeline fixture: {ct} is absent")
        return
    import nibabel as nib
    from monai.inferers import SlidingWindowInferer
    from monai.transforms import (
        Compose, EnsureChannelFirstd, Invertd, LoadImaged, Orientationd, ScaleIntensityRanged,
        Spacingd, Activationsd, AsDiscreted, EnsureTyped,
    )

    # A crop of the CT, saved as the test's input volume (kept small).
    img = nib.load(ct)
    data = np.asanyarray(img.dataobj)
    crop = data[40:72, 30:62, 8:24].astype(np.int16)
    affine = img.affine.copy()
    affine[:3, 3] = affine[:3, :3] @ np.array([40, 30, 8]) + affine[:3, 3]
    crop_img = nib.Nifti1Image(crop, affine)
    crop_img.header.set_xyzt_units("mm")
    # The crop is not kept: the CT's licence is unverified, so the test crops the shared file.
    import tempfile
    crop_path = os.path.join(tempfile.mkdtemp(), "crop.nii.gz")
    nib.save(crop_img, crop_path)

    # The bundle's pre-processing (pancreas_ct_dints_segmentation, inference.yaml).
    pre = Compose([
        LoadImaged(keys="image"),
        EnsureChannelFirstd(keys="image"),
        Orientationd(keys="image", axcodes="RAS"),
        Spacingd(keys="image", pixdim=[1.0, 1.0, 1.0], mode="bilinear"),
        ScaleIntensityRanged(keys="image", a_min=-87, a_max=199, b_min=0.0, b_max=1.0, clip=True),
        EnsureTyped(keys="image"),
    ])
    d = pre({"image": crop_path})

    rng = np.random.default_rng(7)
    a, c = random_arch(rng, 3, 3, False)
    node_a = node_a_of(a, 3)
    net = instance(a, c, node_a, 3, 3, 0.125, True, 1, 3)
    randomise(net, 6)
    # Bias the classes so the label map is not one class everywhere.
    with torch.no_grad():
        net.stem_finals[1].bias.copy_(torch.tensor([0.5, 0.0, -0.5]))
    net.eval()
    inferer = SlidingWindowInferer(roi_size=[32, 32, 32], sw_batch_size=1, overlap=0.625, mode="constant")
    with torch.no_grad():
        d["pred"] = inferer(d["image"][None], net)[0]
    post = Compose([
        Activationsd(keys="pred", softmax=True),
        Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=False, to_tensor=True),
        AsDiscreted(keys="pred", argmax=True),
    ])
    d = post(d)
    labels = d["pred"][0].numpy().astype(np.uint8)
    np.save(os.path.join(OUT, "pancreas_pipeline_labels.npy"), labels)
    torch.save(net.state_dict(), os.path.join(OUT, "pancreas_pipeline.pt"))
    save_arch(os.path.join(OUT, "pancreas_pipeline_arch.pth"), node_a, a, c)
    counts = np.bincount(labels.ravel(), minlength=3)
    print(f"pancreas_pipeline: labels {labels.shape}, counts {counts.tolist()}")
    cases.append({
        "name": "pancreas_pipeline",
        "files": {"pt": "pancreas_pipeline.pt", "arch": "pancreas_pipeline_arch.pth",
                  "labels": "pancreas_pipeline_labels.npy"},
        "crop": {"x": [40, 72], "y": [30, 62], "z": [8, 24]},
        "roi": 32, "scheme": "instance",
    })


if __name__ == "__main__":
    sys.exit(main())
