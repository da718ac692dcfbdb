#!/usr/bin/env python3
"""Export a PyTorch CNN to zebra-cim's quantised network format (docs/NETWORK.md).

Quantisation is post-training (PTQ), the scheme of the int8 model zebra runs:
  * weights: symmetric int8 per output channel, the largest magnitude of each
    channel maps to 127 (-128 is never used);
  * activations: uint8 after every ReLU, one scale per layer, calibrated as a
    high percentile of the float activations over calibration images;
  * biases stay float32 and are added after the integer product is rescaled.

Supported modules, in an `nn.Sequential`: Conv2d (square kernel, equal
stride/padding, no groups or dilation), Linear, BatchNorm2d / BatchNorm1d
right after a Conv2d / Linear (folded into its weights and bias before
quantisation), ReLU (folded into the layer before it), MaxPool2d / AvgPool2d
(kernel == stride), Flatten, Dropout (dropped). Every matrix layer except
the last must be followed by a ReLU (activations are unsigned).

Use as a library (`export(model, calib, out_dir)`) or from the command line on
a saved `state_dict` of the training script's architecture:

    python3 experiments/export_pytorch.py --state model.pt --out models/fmnist_cnn

It also runs the exported int8 model in NumPy with the exact semantics zebra
uses, so the clean int8 accuracy it prints is the one `zebra` reproduces.
"""

import argparse
import os

import numpy as np
import torch
from torch import nn
from safetensors.numpy import save_file


def _fold_batchnorm(m, bn):
    """A copy of Conv2d/Linear `m` with the eval-mode BatchNorm `bn` after it folded in."""
    import copy
    f = copy.deepcopy(m)
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    shape = (-1,) + (1,) * (f.weight.dim() - 1)
    bias = f.bias.detach() if f.bias is not None else torch.zeros_like(bn.running_mean)
    f.weight = nn.Parameter(f.weight.detach() * scale.reshape(shape))
    f.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias.detach())
    return f


def _layers(model):
    """Groups an nn.Sequential into (kind, module, relu) entries."""
    mods = [m for m in model if not isinstance(m, nn.Dropout)]
    folded = []
    for m in mods:
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if not folded or not isinstance(folded[-1], (nn.Conv2d, nn.Linear)):
                raise ValueError("a BatchNorm must directly follow a Conv2d or Linear to be folded")
            folded[-1] = _fold_batchnorm(folded[-1], m)
        else:
            folded.append(m)
    mods = folded
    out = []
    i = 0
    while i < len(mods):
        m = mods[i]
        relu = i + 1 < len(mods) and isinstance(mods[i + 1], nn.ReLU)
        if isinstance(m, nn.Conv2d):
            if m.groups != 1 or m.dilation != (1, 1) or m.kernel_size[0] != m.kernel_size[1] \
                    or m.stride[0] != m.stride[1] or m.padding[0] != m.padding[1] \
                    or m.padding_mode != "zeros":
                raise ValueError(f"module {i}: only square, ungrouped, undilated, zero-padded Conv2d is supported")
            out.append(("conv2d", m, relu))
            i += 2 if relu else 1
        elif isinstance(m, nn.Linear):
            out.append(("linear", m, relu))
            i += 2 if relu else 1
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
            s = m.stride if isinstance(m.stride, int) else m.stride[0]
            if k != s or (m.padding not in (0, (0, 0))):
                raise ValueError(f"module {i}: pools need kernel == stride and no padding")
            out.append(("maxpool" if isinstance(m, nn.MaxPool2d) else "avgpool", k, False))
            i += 1
        elif isinstance(m, nn.Flatten):
            out.append(("flatten", None, False))
            i += 1
        else:
            raise ValueError(f"module {i}: {type(m).__name__} is not supported")
    return out


def quantise_weight(w):
    """Symmetric per-output-channel int8: returns (int8 weights, float32 scales)."""
    flat = w.reshape(w.shape[0], -1)
    amax = np.abs(flat).max(axis=1)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(flat / scale[:, None]), -127, 127).astype(np.int8)
    return q.reshape(w.shape), scale


@torch.no_grad()
def export(model, calib, out_dir, name="model", percentile=99.99, input_scale=1.0 / 255.0):
    """Quantises `model` (float, eval mode) and writes OUT_DIR/NAME.toml + NAME.safetensors.

    `calib`: float tensor [n, c, h, w] of calibration inputs, already scaled
    like the training inputs (pixel / 255). Returns the layer list written.
    """
    model.eval()
    entries = _layers(model)
    tensors = {}
    toml = [
        "# Exported by experiments/export_pytorch.py: post-training int8 quantisation,",
        "# per-channel symmetric weights, uint8 activations (see docs/NETWORK.md).",
        "version = 1",
        f'weights = "{name}.safetensors"',
        "input = {{ channels = {}, height = {}, width = {}, scale = {!r} }}".format(
            calib.shape[1], calib.shape[2], calib.shape[3], float(np.float32(input_scale))),
        "",
    ]
    x = calib
    n_matrix = sum(1 for e in entries if e[0] in ("conv2d", "linear"))
    seen = 0
    for idx, (kind, m, relu) in enumerate(entries):
        if kind in ("conv2d", "linear"):
            seen += 1
            last = seen == n_matrix
            lname = f"{kind[:4]}{seen}" if kind == "conv2d" else f"fc{seen}"
            x = m(x)
            if relu:
                x = torch.relu(x)
            w = m.weight.detach().cpu().numpy().astype(np.float32)
            q, scale = quantise_weight(w)
            bias = (m.bias.detach().cpu().numpy() if m.bias is not None
                    else np.zeros(w.shape[0])).astype(np.float32)
            tensors[f"{lname}.weight"] = q
            tensors[f"{lname}.scale"] = scale
            tensors[f"{lname}.bias"] = bias
            toml.append("[[layer]]")
            toml.append(f'kind = "{kind}"')
            toml.append(f'name = "{lname}"')
            if kind == "conv2d":
                toml.append(f"out_channels = {m.out_channels}")
                toml.append(f"kernel = {m.kernel_size[0]}")
                toml.append(f"stride = {m.stride[0]}")
                toml.append(f"padding = {m.padding[0]}")
            else:
                toml.append(f"out_features = {m.out_features}")
            toml.append(f"relu = {'true' if relu else 'false'}")
            if not last:
                if not relu:
                    raise ValueError(f"layer {lname}: a ReLU must follow every matrix layer but the last")
                amax = float(np.percentile(x.cpu().numpy(), percentile))
                out_scale = np.float32(max(amax, 1e-6) / 255.0)
                toml.append(f"out_scale = {float(out_scale)!r}")
                # Calibrate the following layers on quantised activations.
                x = torch.clamp(torch.round(x / float(out_scale)), 0, 255) * float(out_scale)
            toml.append("")
        elif kind in ("maxpool", "avgpool"):
            x = (nn.functional.max_pool2d if kind == "maxpool" else nn.functional.avg_pool2d)(x, m)
            toml += ["[[layer]]", f'kind = "{kind}"', f"size = {m}", ""]
        else:
            x = torch.flatten(x, 1)
            toml += ["[[layer]]", 'kind = "flatten"', ""]
    os.makedirs(out_dir, exist_ok=True)
    save_file(tensors, os.path.join(out_dir, f"{name}.safetensors"))
    with open(os.path.join(out_dir, f"{name}.toml"), "w") as f:
        f.write("\n".join(toml))
    return os.path.join(out_dir, f"{name}.toml")


# --- The int8 semantics of docs/NETWORK.md, in NumPy (float32 like zebra). ---

def _read_model(toml_path):
    import tomllib
    from safetensors.numpy import load_file
    with open(toml_path, "rb") as f:
        spec = tomllib.load(f)
    st = load_file(os.path.join(os.path.dirname(toml_path), spec["weights"]))
    return spec, st


def _im2col(a, k, stride, pad):
    n, c, h, w = a.shape
    ap = np.pad(a, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    cols = np.empty((n, oh, ow, c, k, k), dtype=a.dtype)
    for i in range(k):
        for j in range(k):
            cols[:, :, :, :, i, j] = ap[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride].transpose(0, 2, 3, 1)
    return cols.reshape(n, oh * ow, c * k * k), oh, ow


def int8_logits(toml_path, images):
    """Exact int8 inference of uint8 images [n, c, h, w]: float32 logits [n, classes]."""
    spec, st = _read_model(toml_path)
    a = images.astype(np.int64)
    s_x = np.float32(spec["input"]["scale"])
    for layer in spec["layer"]:
        kind = layer["kind"]
        if kind in ("conv2d", "linear"):
            name = layer["name"]
            w = st[f"{name}.weight"].astype(np.int64)
            scale, bias = st[f"{name}.scale"], st[f"{name}.bias"]
            if kind == "conv2d":
                n = a.shape[0]
                cols, oh, ow = _im2col(a, layer["kernel"], layer.get("stride", 1), layer.get("padding", 0))
                acc = cols @ w.reshape(w.shape[0], -1).T          # [n, pos, out]
                acc = acc.transpose(0, 2, 1).reshape(n, w.shape[0], oh, ow)
                sc, bi = scale[None, :, None, None], bias[None, :, None, None]
            else:
                acc = a @ w.T
                sc, bi = scale[None, :], bias[None, :]
            real = (s_x * sc) * acc.astype(np.float32) + bi
            if layer.get("relu", False):
                real = np.maximum(real, np.float32(0))
            if "out_scale" not in layer:
                return real.astype(np.float32)
            s_x = np.float32(layer["out_scale"])
            a = np.clip(np.rint(real / s_x), 0, 255).astype(np.int64)
        elif kind == "maxpool":
            s = layer["size"]
            n, c, h, w = a.shape
            a = a[:, :, :h // s * s, :w // s * s].reshape(n, c, h // s, s, w // s, s).max(axis=(3, 5))
        elif kind == "avgpool":
            s = layer["size"]
            n, c, h, w = a.shape
            m = a[:, :, :h // s * s, :w // s * s].reshape(n, c, h // s, s, w // s, s).sum(axis=(3, 5))
            a = np.rint(m.astype(np.float32) / np.float32(s * s)).astype(np.int64)
        elif kind == "flatten":
            a = a.reshape(a.shape[0], -1)
    raise ValueError("the model ends without a logits layer")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--state", required=True, help="state_dict saved by train_fmnist.py")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--name", default="model")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    args = ap.parse_args()
    from train_fmnist import build_model, read_idx
    model = build_model()
    model.load_state_dict(torch.load(args.state, map_location="cpu"))
    train = read_idx(os.path.join(args.data, "train-images-idx3-ubyte.gz"))
    calib = torch.from_numpy(train[:2000, None].astype(np.float32) / 255.0)
    path = export(model, calib, args.out, args.name)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
