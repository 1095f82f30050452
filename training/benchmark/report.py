"""The benchmark report: accuracy of INT8 vs fp32, the ratios between configurations, the targets with
PASS/FAIL/SKIP, the share of the FLOP limit reached, and the text table.

Importing this module needs neither torch nor onnx.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .photos import PhotoSet

SCHEMA = "wildlife-vision/benchmark/v1"
TARGETS = {
    "e2e_fp32_vs_model_b32": 0.85,     # end-to-end fp32 >= 0.85 x model-only fp32 at batch 32
    "e2e_fp32_vs_torch": 3.0,          # end-to-end onnxruntime fp32 >= 3 x the competent torch baseline
    "e2e_int8_vs_fp32": 1.15,          # INT8 end-to-end >= 1.15 x fp32 end-to-end
    "int8_ap_change": 0.005,           # |macro-AP(INT8) - macro-AP(fp32)| <= 0.005 on the validation split
    "train_ours_vs_plain": 2.0,        # our training photos/s >= 2 x a plain torch loop
}
#: report key -> row name; ``torch_eager`` is the naive torch baseline (its key from before the competent one)
CONFIG_NAMES = {"torch_competent": "torch competent", "torch_eager": "torch naive", "ort_fp32": "onnxruntime fp32",
                "ort_int8": "onnxruntime INT8", "ov_bf16": "OpenVINO bf16", "ov_fp32": "OpenVINO fp32"}
#: the execution-profile targets (issue 18): auto end to end vs model-only, and vs onnxruntime fp32 end to end
PROFILE_TARGETS = {"e2e_vs_model_only": 0.85, "auto_vs_fp32_fast_cpu": 1.5, "auto_vs_fp32_avx2": 1.15}
TORCH_CONFIGS = ("torch_competent", "torch_eager")
def _ap(targets: np.ndarray, scores: np.ndarray) -> Dict[str, Any]:
    from wildlife_vision.evaluation.metrics import average_precision, macro_ap

    return {"macro": macro_ap(targets, scores),
            "per_label": [average_precision(targets[:, j], scores[:, j]) for j in range(targets.shape[1])]}


def accuracy(photos: PhotoSet, configs: Dict[str, Dict[str, Any]], labels: Sequence[str]) -> Dict[str, Any]:
    if photos.targets is None or photos.is_val is None or not photos.is_val.any():
        return {"note": "no labelled validation photos: accuracy not compared"}
    mask = photos.is_val
    y = photos.targets[mask]
    out: Dict[str, Any] = {"val_photos": int(mask.sum()), "labels": list(labels)}
    for name, res in configs.items():
        if "scores" in res and len(res["scores"]) == len(mask):
            s = np.asarray(res["scores"], dtype=np.float64)[mask]
            ok = np.all(np.isfinite(s), axis=1)
            ap = _ap(y[ok], s[ok])
            out[name] = {"macro_ap": ap["macro"], "per_label_ap": dict(zip(labels, ap["per_label"])),
                         "scored": int(ok.sum())}
    if "ort_fp32" in out and "ort_int8" in out and out["ort_fp32"]["macro_ap"] is not None \
            and out["ort_int8"]["macro_ap"] is not None:
        out["int8_macro_ap_change"] = out["ort_int8"]["macro_ap"] - out["ort_fp32"]["macro_ap"]
        out["int8_per_label_ap_change"] = {
            lab: (None if out["ort_fp32"]["per_label_ap"][lab] is None
                  else out["ort_int8"]["per_label_ap"][lab] - out["ort_fp32"]["per_label_ap"][lab])
            for lab in labels}
        f = np.asarray(configs["ort_fp32"]["scores"])[mask]
        q = np.asarray(configs["ort_int8"]["scores"])[mask]
        out["int8_max_abs_score_diff"] = float(np.nanmax(np.abs(f - q)))
    for key in TORCH_CONFIGS:  # with the same weights, torch and onnxruntime should agree
        if "ort_fp32" in configs and "scores" in configs.get(key, {}) \
                and "checkpoint" in str(configs[key].get("weights", "")):
            f = np.asarray(configs["ort_fp32"]["scores"])
            t = np.asarray(configs[key]["scores"])
            if f.shape == t.shape:
                out[f"{key}_vs_fp32_max_abs_score_diff"] = float(np.nanmax(np.abs(f - t)))
    return out


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return round(a / b, 3) if a and b else None


def build_ratios_and_targets(report: Dict[str, Any]) -> None:
    c = report["configs"]

    def e2e(name: str) -> Optional[float]:
        return c.get(name, {}).get("e2e", {}).get("photos_per_s")

    def mo(name: str, bs: str) -> Optional[float]:
        return c.get(name, {}).get("model_only", {}).get(bs, {}).get("photos_per_s")

    big = str(max(int(b) for b in report["settings"]["batch_sizes"]))
    ratios = {
        f"e2e_fp32_vs_model_only_fp32_b{big}": _ratio(e2e("ort_fp32"), mo("ort_fp32", big)),
        "e2e_fp32_vs_torch_competent": _ratio(e2e("ort_fp32"), e2e("torch_competent")),
        "e2e_int8_vs_torch_competent": _ratio(e2e("ort_int8"), e2e("torch_competent")),
        f"model_only_fp32_vs_torch_competent_b{big}": _ratio(mo("ort_fp32", big), mo("torch_competent", big)),
        "e2e_torch_competent_vs_naive": _ratio(e2e("torch_competent"), e2e("torch_eager")),
        "e2e_fp32_vs_torch_eager": _ratio(e2e("ort_fp32"), e2e("torch_eager")),
        "e2e_int8_vs_fp32": _ratio(e2e("ort_int8"), e2e("ort_fp32")),
        "e2e_int8_vs_torch_eager": _ratio(e2e("ort_int8"), e2e("torch_eager")),
        f"model_only_fp32_vs_torch_b{big}": _ratio(mo("ort_fp32", big), mo("torch_eager", big)),
        f"model_only_int8_vs_fp32_b{big}": _ratio(mo("ort_int8", big), mo("ort_fp32", big)),
        f"e2e_int8_vs_model_only_int8_b{big}": _ratio(e2e("ort_int8"), mo("ort_int8", big)),
    }
    for key in ("ov_bf16", "ov_fp32"):
        ratios[f"e2e_{key}_vs_fp32"] = _ratio(e2e(key), e2e("ort_fp32"))
        ratios[f"model_only_{key}_vs_fp32_b{big}"] = _ratio(mo(key, big), mo("ort_fp32", big))
        ratios[f"e2e_{key}_vs_model_only_{key}_b{big}"] = _ratio(e2e(key), mo(key, big))
    auto = (report.get("profiles") or {}).get("auto") or {}
    auto_key = auto.get("config")
    if auto_key:
        ratios["e2e_auto_vs_fp32"] = _ratio(e2e(auto_key), e2e("ort_fp32"))
        ratios[f"e2e_auto_vs_model_only_auto_b{big}"] = _ratio(e2e(auto_key), mo(auto_key, big))
    report["ratios"] = {k: v for k, v in ratios.items() if v is not None}
    gflop = report["model"].get("gflop_per_photo")
    peak = report["machine"].get("peak_gflops_fp32")
    if gflop and peak:
        lim = peak / gflop
        report["flop_limit"] = {"photos_per_s_at_peak": round(lim, 1), "peak_gflops_fp32": peak,
                                "gflop_per_photo": gflop}
        for name, res in c.items():
            if "e2e" in res:
                res["e2e"]["fraction_of_flop_limit"] = round(res["e2e"]["photos_per_s"] / lim, 3)
            for row in res.get("model_only", {}).values():
                row["fraction_of_flop_limit"] = round(row["photos_per_s"] / lim, 3)
    targets = []

    def add(name: str, what: str, value: Optional[float], threshold: float, higher: bool = True,
            why_missing: str = "") -> None:
        if value is None:
            targets.append({"name": name, "what": what, "threshold": threshold, "value": None, "passed": None,
                            "status": "SKIP", "note": why_missing})
            return
        ok = value >= threshold if higher else abs(value) <= threshold
        targets.append({"name": name, "what": what, "threshold": threshold, "value": round(value, 4),
                        "passed": bool(ok), "status": "PASS" if ok else "FAIL"})

    add("e2e_fp32_vs_model_b32", f"end-to-end fp32 / model-only fp32 at batch {big} >= 0.85",
        ratios[f"e2e_fp32_vs_model_only_fp32_b{big}"], TARGETS["e2e_fp32_vs_model_b32"],
        why_missing="onnxruntime fp32 not measured")
    add("e2e_fp32_vs_torch", "end-to-end onnxruntime fp32 / torch competent >= 3",
        ratios["e2e_fp32_vs_torch_competent"], TARGETS["e2e_fp32_vs_torch"],
        why_missing=c.get("torch_competent", {}).get("skipped", "torch competent not measured"))
    add("e2e_int8_vs_fp32", "end-to-end INT8 / fp32 >= 1.15", ratios["e2e_int8_vs_fp32"],
        TARGETS["e2e_int8_vs_fp32"], why_missing=c.get("ort_int8", {}).get("skipped", "INT8 not measured"))
    if auto_key:
        family = ((report.get("profiles") or {}).get("cpu") or {}).get("family", "baseline")
        fast = family in ("amx", "avx512_bf16", "avx512_vnni")
        need = PROFILE_TARGETS["auto_vs_fp32_fast_cpu" if fast else "auto_vs_fp32_avx2"]
        add("e2e_auto_vs_model_only", f"auto profile ({auto['profile']}) end to end / its model-only at batch {big} "
            ">= 0.85", ratios.get(f"e2e_auto_vs_model_only_auto_b{big}"), PROFILE_TARGETS["e2e_vs_model_only"],
            why_missing="auto profile not measured")
        add("e2e_auto_vs_fp32", f"auto profile ({auto['profile']}) end to end / onnxruntime fp32 end to end >= "
            f"{need:g} on a {family} CPU", ratios.get("e2e_auto_vs_fp32"), need, why_missing="not measured")
    acc = report.get("accuracy", {})
    add("int8_ap_change", "|macro-AP INT8 - fp32| on the validation split <= 0.005",
        acc.get("int8_macro_ap_change"), TARGETS["int8_ap_change"], higher=False,
        why_missing=acc.get("note", "INT8 or labels missing"))
    tr = report.get("training") or {}
    add("train_ours_vs_plain", "training photos/s ours / plain torch loop >= 2", tr.get("ratio_ours_vs_plain"),
        TARGETS["train_ours_vs_plain"], why_missing=tr.get("skipped", "training not measured"))
    report["targets"] = targets


def _f(v: Any, spec: str = ".1f", missing: str = "-") -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return missing
    return format(v, spec)


def format_report(r: Dict[str, Any]) -> str:
    m, mod = r["machine"], r["model"]
    L: List[str] = []
    L.append(f"wildlife-vision benchmark ({r['created']}, {r['seconds']} s)")
    L.append(f"machine: {m['cpu']}, {m['cores']} cores @ {_f(m['ghz'], '.2f')} GHz, SIMD {'/'.join(m['simd'])}; "
             f"fp32 peak {_f(m['peak_gflops_fp32'])} GFLOP/s ({m['flops_per_cycle_per_core']} FLOP/cycle/core)")
    v = m["versions"]
    L.append("versions: " + ", ".join(f"{k} {v[k]}" for k in ("onnxruntime", "torch", "torchvision", "timm",
                                                              "pillow", "numpy") if k in v)
             + (f", libjpeg-turbo {'yes' if v.get('libjpeg_turbo') else 'no'}" if "libjpeg_turbo" in v else ""))
    L.append(f"model: {mod['path']} ({mod['backbone']}, {mod['input_size'][0]}x{mod['input_size'][1]}, "
             f"{_f(mod.get('gflop_per_photo'), '.3g')} GFLOP/photo: {mod.get('source')})")
    if mod.get("int8_path"):
        L.append(f"INT8 model: {mod['int8_path']}")
    L.append(f"photos: {r['photos']['count']} from {r['photos']['source']}")
    prof = r.get("profiles") or {}
    if prof.get("cpu"):
        cpu = prof["cpu"]
        L.append(f"CPU family {cpu['family']}: features {' '.join(cpu['features']) or 'none'} (from {cpu['source']}); "
                 f"auto profile: {(prof.get('auto') or {}).get('profile') or 'none'}")
        for row in prof.get("table", []):
            L.append(f"  profile {row['profile']:<14} {row['runtime']:<12} {'usable' if row['usable'] else 'not used: ' + (row['why_not'] or '')}")
    if r.get("flop_limit"):
        L.append(f"FLOP limit: {r['flop_limit']['photos_per_s_at_peak']} photos/s "
                 f"(= {r['flop_limit']['peak_gflops_fp32']} GFLOP/s / {r['flop_limit']['gflop_per_photo']} GFLOP)")
    bss = [str(b) for b in r["settings"]["batch_sizes"]]
    head = (f"{'configuration':<18} {'e2e ph/s':>9} {'%limit':>7} " + " ".join(f"{'b' + b + ' ph/s':>10}" for b in bss)
            + f" {'1-photo p50/p95 ms':>19} {'b1 p50 ms':>9} {'peak RSS MB':>11}")
    L.append("")
    L.append(head)
    L.append("-" * len(head))
    for name, res in r["configs"].items():
        label = CONFIG_NAMES[name]
        if "skipped" in res or "error" in res:
            L.append(f"{label:<18} {'skipped: ' + res['skipped'] if 'skipped' in res else res['error'][:200]}")
            continue
        e = res["e2e"]
        mo = res["model_only"]
        lat = res["latency_one_photo"]
        frac = e.get("fraction_of_flop_limit")
        L.append(f"{label:<18} {e['photos_per_s']:>9.1f} {_f(frac * 100 if frac is not None else None, '.1f'):>6}% "
                 + " ".join(f"{mo[b]['photos_per_s']:>10.1f}" if b in mo else f"{'-':>10}" for b in bss)
                 + f" {lat['p50_ms']:>9.1f} / {lat['p95_ms']:<7.1f} {mo.get('1', {}).get('p50_ms', float('nan')):>9.2f}"
                   f" {res['peak_rss_mb']:>11.0f}")
    L.append("")
    for name, res in r["configs"].items():
        if "e2e" in res and "by_decode_workers" in res["e2e"]:
            by = res["e2e"]["by_decode_workers"]
            unit = "DataLoader workers" if name in TORCH_CONFIGS else "decoding threads"
            L.append(f"{CONFIG_NAMES[name]} end to end by {unit}: "
                     + ", ".join(f"{w}: {by[w]['photos_per_s']:.1f}" for w in by)
                     + f" photos/s (best {res['e2e']['best_decode_workers']}; scores identical across settings: "
                       f"max diff {res['e2e']['max_abs_score_diff_between_worker_settings']:.1e})")
        if name in TORCH_CONFIGS and "weights" in res:
            how = _settings_text(res["settings"]) if res.get("settings") else f"{res['torch_threads']} torch threads"
            L.append(f"{CONFIG_NAMES[name]}: {how}; weights: {res['weights']}")
    if r.get("ratios"):
        L.append("ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in r["ratios"].items()))
    acc = r.get("accuracy", {})
    if "int8_macro_ap_change" in acc:
        f32, i8 = acc["ort_fp32"], acc["ort_int8"]
        per = ", ".join(f"{lab} {_f(f32['per_label_ap'][lab], '.4f')} -> {_f(i8['per_label_ap'][lab], '.4f')}"
                        for lab in acc["labels"])
        L.append(f"validation AP on {acc['val_photos']} photos, fp32 -> INT8: macro {f32['macro_ap']:.4f} -> "
                 f"{i8['macro_ap']:.4f} ({acc['int8_macro_ap_change']:+.4f}); {per}; max |score diff| "
                 f"{acc['int8_max_abs_score_diff']:.3f}")
    elif acc.get("note"):
        L.append(f"accuracy: {acc['note']}")
    same = [f"{CONFIG_NAMES[k]} {acc[k + '_vs_fp32_max_abs_score_diff']:.1e}" for k in TORCH_CONFIGS
            if k + "_vs_fp32_max_abs_score_diff" in acc]
    if same:
        L.append("torch vs onnxruntime fp32 on the same weights, max |score diff|: " + ", ".join(same))
    tr = r.get("training") or {}
    if tr.get("variants"):
        for v, res in tr["variants"].items():
            if "error" in res:
                L.append(f"training {v}: {res['error'][:300]}")
            else:
                L.append(f"training {v:<5}: {res['photos_per_s']:.1f} photos/s ({res['steps']} steps of "
                         f"{res['batch_size']} after {res['warmup_steps']} warm-up, p50 step {res['step_ms_p50']:.0f} ms, main-process"
                         f" peak RSS {res['peak_rss_mb']:.0f} MB); {_settings_text(res.get('settings', {}))}")
        if "ratio_ours_vs_plain" in tr:
            L.append(f"training ours / plain: {tr['ratio_ours_vs_plain']:.2f}x ({tr['backbone']} at "
                     f"{tr['image_size']} px, batch {tr['batch_size']})")
    elif tr.get("skipped"):
        L.append(f"training: skipped ({tr['skipped']})")
    L.append("")
    L.append("targets:")
    for t in r["targets"]:
        val = _f(t["value"], ".3f") if t["value"] is not None else "n/a"
        L.append(f"  [{t['status']}] {t['what']}: {val}" + (f" ({t['note']})" if t.get("note") else ""))
    for n in r.get("notes", []):
        L.append(f"note: {n}")
    return "\n".join(L)


def _settings_text(s: Dict[str, Any]) -> str:
    return "; ".join(f"{k} {v}" for k, v in s.items())

