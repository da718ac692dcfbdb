#!/usr/bin/env python3
"""Export a PyTorch network to zebra-cim's quantised network format (docs/NETWORK.md).

The model is traced with torch.fx, so residual networks export as well as
`nn.Sequential` chains. Quantisation is post-training (PTQ), the scheme of
the int8 model zebra runs:
  * weights: symmetric int8 per output channel, the largest magnitude of each
    channel maps to 127 (-128 is never used);
  * activations: one scale per layer output, calibrated as a high percentile
    of the float activation magnitudes over calibration images; uint8 where
    the float activations are never negative (after a ReLU), int8 in
    [-127, 127] where they are;
  * biases stay float32 and are added after the integer product is rescaled.

Supported operations: Conv2d (square kernel, equal stride/padding, no
groups or dilation), Linear, BatchNorm2d / BatchNorm1d right after a Conv2d
/ Linear (folded into its weights and bias before quantisation), ReLU
(module, `torch.relu` or `F.relu`; folded into the layer or add before
it), `+` / `torch.add` of two tensors, MaxPool2d / AvgPool2d (kernel ==
stride), AdaptiveAvgPool2d(1) (global average pool), Flatten /
`torch.flatten`, Dropout and Identity (dropped).

Use as a library (`export(model, calib, out_dir)`) or from the command line on
a saved `state_dict` of one of the training script's architectures:

    python3 experiments/export_pytorch.py --arch resnet --state models/fmnist_resnet/float.pt --out models/fmnist_resnet

`--terms K` gives every weight at most K non-zero signed power-of-two terms
(the nearest such value to the float weight on its channel's scale), the
term budget of zebra's `[quantize] terms` applied before rounding.

It also runs the exported int8 model in NumPy with the exact semantics zebra
uses (`int8_logits`), so the clean int8 accuracy it prints is the one `zebra`
reproduces.
"""

import argparse
import copy
import operator
import os

import numpy as np
import torch
from torch import fx, nn
from safetensors.numpy import save_file


def _fold_batchnorm(m, bn):
    """A copy of Conv2d/Linear `m` with the eval-mode BatchNorm `bn` after it folded in."""
    f = copy.deepcopy(m)
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    shape = (-1,) + (1,) * (f.weight.dim() - 1)
    bias = f.bias.detach() if f.bias is not None else torch.zeros_like(bn.running_mean)
    f.weight = nn.Parameter(f.weight.detach() * scale.reshape(shape))
    f.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias.detach())
    return f


def csd_term_count(v):
    """Non-zero digits of integer v in canonical signed digit (non-adjacent) form."""
    v, n = int(v), 0
    while v != 0:
        if v & 1:
            v -= 2 - (v % 4)
            n += 1
        v //= 2
    return n


def term_grid(terms):
    """The int8 values in [-127, 127] with at most `terms` signed power-of-two terms, sorted."""
    return np.array([v for v in range(-127, 128) if csd_term_count(v) <= terms], dtype=np.float64)


def nearest_on_grid(x, grid):
    """Each element of float array x moved to the nearest grid value (ties: the smaller magnitude)."""
    hi = np.clip(np.searchsorted(grid, x), 1, len(grid) - 1)
    lo_v, hi_v = grid[hi - 1], grid[hi]
    d_lo, d_hi = np.abs(x - lo_v), np.abs(hi_v - x)
    pick_hi = (d_hi < d_lo) | ((d_hi == d_lo) & (np.abs(hi_v) < np.abs(lo_v)))
    return np.where(pick_hi, hi_v, lo_v)


def quantise_weight(w, terms=None):
    """Symmetric per-output-channel int8: returns (int8 weights, float32 scales).

    With `terms`, each weight is the nearest value with at most that many
    non-zero signed power-of-two (CSD) terms to its float value, on the same
    per-channel scale: a term budget applied from the float weights, not to
    rounded int8 values."""
    flat = w.reshape(w.shape[0], -1)
    amax = np.abs(flat).max(axis=1)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    x = flat / scale[:, None]
    if terms is None:
        q = np.clip(np.rint(x), -127, 127)
    else:
        q = nearest_on_grid(np.clip(x, -127, 127), term_grid(terms))
    return q.astype(np.int8).reshape(w.shape), scale


class _Graph:
    """The traced model as zebra layers: fusion of BatchNorm and ReLU, and
    the kind of every fx node."""

    def __init__(self, model):
        self.gm = fx.symbolic_trace(model)
        self.mods = dict(self.gm.named_modules())

    def module(self, node):
        return self.mods[node.target] if node.op == "call_module" else None

    def is_relu(self, node):
        m = self.module(node)
        return isinstance(m, nn.ReLU) or (node.op == "call_function" and node.target in (
            torch.relu, nn.functional.relu)) or (node.op == "call_method" and node.target == "relu")

    def is_identity(self, node):
        return isinstance(self.module(node), (nn.Dropout, nn.Identity))

    def single_user(self, node, test):
        users = list(node.users)
        return users[0] if len(users) == 1 and test(users[0]) else None


def _kind(g, node):
    """zebra's kind for an fx node, or raises for an unsupported one."""
    m = g.module(node)
    if isinstance(m, nn.Conv2d):
        if m.groups != 1 or m.dilation != (1, 1) or m.kernel_size[0] != m.kernel_size[1] \
                or m.stride[0] != m.stride[1] or m.padding[0] != m.padding[1] \
                or m.padding_mode != "zeros" or isinstance(m.padding, str):
            raise ValueError(f"{node.target}: only square, ungrouped, undilated, zero-padded Conv2d is supported")
        return "conv2d"
    if isinstance(m, nn.Linear):
        return "linear"
    if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
        k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
        s = m.stride if isinstance(m.stride, int) else m.stride[0]
        if k != s or m.padding not in (0, (0, 0)):
            raise ValueError(f"{node.target}: pools need kernel == stride and no padding")
        return "maxpool" if isinstance(m, nn.MaxPool2d) else "avgpool"
    if isinstance(m, nn.AdaptiveAvgPool2d):
        if m.output_size not in (1, (1, 1)):
            raise ValueError(f"{node.target}: only AdaptiveAvgPool2d(1) (a global average pool) is supported")
        return "global_avgpool"
    if isinstance(m, nn.Flatten) or (node.op == "call_function" and node.target == torch.flatten):
        return "flatten"
    if (node.op == "call_function" and node.target in (operator.add, torch.add)) or \
            (node.op == "call_method" and node.target == "add"):
        if len(node.args) != 2 or node.kwargs or not all(isinstance(a, fx.Node) for a in node.args):
            raise ValueError(f"{node.name}: only the sum of two tensors is supported")
        return "add"
    what = type(m).__name__ if m is not None else f"{node.op} {node.target}"
    raise ValueError(f"{node.name}: {what} is not supported (see the list in export_pytorch.py)")


@torch.no_grad()
def export(model, calib, out_dir, name="model", percentile=99.99, input_scale=1.0 / 255.0,
           terms=None):
    """Quantises `model` (float, eval mode) and writes OUT_DIR/NAME.toml + NAME.safetensors.

    `calib`: float tensor [n, c, h, w] of calibration inputs, already scaled
    like the training inputs (pixel / 255). Returns the path of the TOML file.
    Later layers are calibrated on the already-quantised outputs of earlier ones.
    `terms`: a budget of signed power-of-two terms per weight (`quantise_weight`).
    """
    model.eval()
    g = _Graph(model)
    tensors = {}
    toml = [
        "# Exported by experiments/export_pytorch.py: post-training int8 quantisation,",
        "# per-channel symmetric weights, uint8/int8 activations (see docs/NETWORK.md).",
        "version = 2",
        f'weights = "{name}.safetensors"',
        "input = {{ channels = {}, height = {}, width = {}, scale = {!r} }}".format(
            calib.shape[1], calib.shape[2], calib.shape[3], float(np.float32(input_scale))),
        "",
    ]
    s_in = float(np.float32(input_scale))
    # fx node -> (zebra layer name, quantised value); the image is "input".
    value = {}
    previous = None
    layers = 0
    done = set()
    last_logits = False
    for node in g.gm.graph.nodes:
        if node in done:
            continue
        if node.op == "placeholder":
            value[node] = ("input", torch.clamp(torch.round(calib / s_in), 0, 255) * s_in, s_in)
            previous = "input"
            continue
        if node.op == "output":
            src = node.args[0]
            if not (isinstance(src, fx.Node) and value[src][0] == previous and last_logits):
                raise ValueError("the model must end with a Conv2d or Linear whose output is returned")
            break
        if g.is_identity(node):
            value[node] = value[node.args[0]]
            continue
        kind = _kind(g, node)
        last_logits = False
        sources = [a for a in node.args if isinstance(a, fx.Node)][:2 if kind == "add" else 1]
        ins = [value[a] for a in sources]
        lname = node.target if node.op == "call_module" else node.name
        lname = str(lname)
        entry = ["[[layer]]", f'kind = "{kind}"', f'name = "{lname}"']
        if kind == "add":
            entry.append("inputs = [{}]".format(", ".join(f'"{n}"' for n, _, _ in ins)))
        elif ins[0][0] != previous:
            entry.append(f'input = "{ins[0][0]}"')
        x, scale_out = ins[0][1], ins[0][2]
        end = node
        if kind in ("conv2d", "linear"):
            m = g.module(node)
            bn = g.single_user(node, lambda u: isinstance(g.module(u), (nn.BatchNorm1d, nn.BatchNorm2d)))
            if bn is not None:
                m = _fold_batchnorm(m, g.module(bn))
                end = bn
                done.add(bn)
            w = m.weight.detach().cpu().numpy().astype(np.float32)
            q, scale = quantise_weight(w, terms)
            bias = (m.bias.detach().cpu().numpy() if m.bias is not None
                    else np.zeros(w.shape[0])).astype(np.float32)
            tensors[f"{lname}.weight"] = q
            tensors[f"{lname}.scale"] = scale
            tensors[f"{lname}.bias"] = bias
            if kind == "conv2d":
                entry += [f"out_channels = {m.out_channels}", f"kernel = {m.kernel_size[0]}",
                          f"stride = {m.stride[0]}", f"padding = {m.padding[0]}"]
            else:
                entry.append(f"out_features = {m.out_features}")
            y = m(x)
            layers += 1
        elif kind == "add":
            y = x + ins[1][1]
        elif kind in ("maxpool", "avgpool"):
            mod = g.module(node)
            k = mod.kernel_size if isinstance(mod.kernel_size, int) else mod.kernel_size[0]
            entry.append(f"size = {k}")
            y = mod(x)
        elif kind == "global_avgpool":
            y = torch.mean(x, dim=(2, 3), keepdim=True)
        else:
            y = torch.flatten(x, 1)
        if kind in ("conv2d", "linear", "add"):
            relu = g.single_user(end, g.is_relu)
            if relu is not None:
                end = relu
                done.add(relu)
                y = torch.relu(y)
            entry.append(f"relu = {'true' if relu is not None else 'false'}")
            users = [u for u in end.users]
            is_logits = kind != "add" and len(users) == 1 and users[0].op == "output"
            if is_logits:
                last_logits = True
            else:
                signed = bool((y < 0).any())
                amax = float(np.percentile(np.abs(y.cpu().numpy()), percentile))
                out_scale = np.float32(max(amax, 1e-6) / (127.0 if signed else 255.0))
                entry.append(f"out_scale = {float(out_scale)!r}")
                if signed:
                    entry.append("out_signed = true")
                lo, hi = (-127, 127) if signed else (0, 255)
                scale_out = float(out_scale)
                y = torch.clamp(torch.round(y / scale_out), lo, hi) * scale_out
        elif kind in ("avgpool", "global_avgpool"):
            # zebra rounds the mean of the integers half to even.
            y = torch.round(y / scale_out) * scale_out
        value[node] = value[end] = (lname, y, scale_out)
        toml += entry + [""]
        previous = lname
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
    # Each layer's output: (integer values, scale); "input" is the image.
    outs = {"input": (images.astype(np.int64), np.float32(spec["input"]["scale"]))}
    previous = "input"

    def requantise(real, layer):
        s = np.float32(layer["out_scale"])
        lo, hi = (-127, 127) if layer.get("out_signed", False) else (0, 255)
        return np.clip(np.rint(real / s), lo, hi).astype(np.int64), s

    for i, layer in enumerate(spec["layer"]):
        kind = layer["kind"]
        name = layer.get("name", f"#{i}")
        a, s_x = outs[layer.get("input", previous)] if kind != "add" else (None, None)
        if kind in ("conv2d", "linear"):
            w = st[f"{name}.weight"].astype(np.int64)
            scale, bias = st[f"{name}.scale"], st[f"{name}.bias"]
            if kind == "conv2d":
                n = a.shape[0]
                cols, oh, ow = _im2col(a, layer["kernel"], layer.get("stride", 1), layer.get("padding", 0))
                acc = cols @ w.reshape(w.shape[0], -1).T          # [n, pos, out]
                acc = acc.transpose(0, 2, 1).reshape(n, w.shape[0], oh, ow)
                sc, bi = scale[None, :, None, None], bias[None, :, None, None]
            else:
                acc = a.reshape(a.shape[0], -1) @ w.T
                sc, bi = scale[None, :], bias[None, :]
            real = (s_x * sc) * acc.astype(np.float32) + bi
            if layer.get("relu", False):
                real = np.maximum(real, np.float32(0))
            if "out_scale" not in layer:
                return real.reshape(real.shape[0], -1).astype(np.float32)
            outs[name] = requantise(real, layer)
        elif kind == "add":
            (a, s_a), (b, s_b) = (outs[n] for n in layer["inputs"])
            real = s_a * a.astype(np.float32) + s_b * b.astype(np.float32)
            if layer.get("relu", False):
                real = np.maximum(real, np.float32(0))
            outs[name] = requantise(real, layer)
        elif kind == "maxpool":
            s = layer["size"]
            n, c, h, w = a.shape
            outs[name] = (a[:, :, :h // s * s, :w // s * s].reshape(n, c, h // s, s, w // s, s).max(axis=(3, 5)), s_x)
        elif kind in ("avgpool", "global_avgpool"):
            n, c, h, w = a.shape
            sy, sx = (h, w) if kind == "global_avgpool" else (layer["size"],) * 2
            m = a[:, :, :h // sy * sy, :w // sx * sx].reshape(n, c, h // sy, sy, w // sx, sx).sum(axis=(3, 5))
            outs[name] = (np.rint(m.astype(np.float32) / np.float32(sy * sx)).astype(np.int64), s_x)
        elif kind == "flatten":
            outs[name] = (a.reshape(a.shape[0], -1, 1, 1), s_x)
        previous = name
    raise ValueError("the model ends without a logits layer")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", choices=["cnn", "resnet"], default="cnn",
                    help="the architecture of train_fmnist.py that the state_dict is for")
    ap.add_argument("--state", required=True, help="state_dict saved by train_fmnist.py")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--name", default="model")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--terms", type=int, choices=range(1, 9), metavar="K",
                    help="at most K signed power-of-two terms per weight, nearest to the float weight")
    args = ap.parse_args()
    from train_fmnist import ResNet, build_model, read_idx
    model = ResNet() if args.arch == "resnet" else build_model()
    model.load_state_dict(torch.load(args.state, map_location="cpu"))
    train = read_idx(os.path.join(args.data, "train-images-idx3-ubyte.gz"))
    calib = torch.from_numpy(train[:2000, None].astype(np.float32) / 255.0)
    path = export(model, calib, args.out, args.name, terms=args.terms)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
