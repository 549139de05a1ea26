"""Checks of a model that read its config.json and the Hugging Face cache, for the preflight
(core/preflight.py): a Hub id that cannot be had (offline and not in the cache, unreachable,
missing, gated), and a model that needs its own Python code while trust_remote_code is off.

No torch, and transformers is not imported for the common case: its table of model types is
read from its own source file.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from kdstudio.core.errors import ModelError

_MODEL_TYPES: dict[str, set[str] | None] = {}


def _cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def hub_failure(exc: BaseException, repo_id: str, revision: str, role: str) -> ModelError | None:
    """The error to raise when a Hub model's config.json could not be had, or None when the
    download at run time should report it (a repository without a config.json, a server
    error). Offline or unreachable, a model not in the local cache cannot load at all."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from kdstudio.core.hub import _chain, explain_failure

    chain = _chain(exc)
    offline = constants.HF_HUB_OFFLINE or any(isinstance(e, OfflineModeIsEnabled) for e in chain)
    not_cached = any(isinstance(e, LocalEntryNotFoundError) for e in chain)
    at = f"'{revision}' of " if revision else ""
    if offline:
        return ModelError(
            f"The {role} '{repo_id}' is a Hugging Face Hub id, and the {at}model is not in the "
            f"local Hugging Face cache ({_cache_dir()}), while downloads are switched off "
            "(HF_HUB_OFFLINE is set).",
            hint=f"Unset HF_HUB_OFFLINE so that the run can download it; or download it once "
                 f"while online ('hf download {repo_id}'); or set {role}.name to a folder that "
                 "holds the model.")
    if not_cached:
        return ModelError(
            f"The {role} '{repo_id}' is a Hugging Face Hub id, but the Hub "
            f"({constants.ENDPOINT}) could not be reached and the {at}model is not in the local "
            f"Hugging Face cache ({_cache_dir()}).",
            hint=f"Connect to the network (check HF_ENDPOINT, if set) so that the run can "
                 f"download it, or set {role}.name to a folder that holds the model.")
    if any(isinstance(e, (GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError))
           for e in chain) or any(isinstance(e, HfHubHTTPError) and getattr(e, "response", None)
                                  is not None and e.response.status_code in (401, 403)
                                  for e in chain):
        message, hint = explain_failure(exc, repo_id, revision, "model")
        return ModelError(f"{message} (the {role})", hint=hint)
    if any(isinstance(e, EntryNotFoundError) for e in chain):
        return None  # no config.json on the Hub: the download names what is there
    return None


def hub_config(repo_id: str, revision: str, role: str) -> dict[str, Any] | None:
    """A Hub model's config.json (a few kB, never the weights; from the cache when offline).
    ModelError when the model cannot be had at all; None when the download should say why."""
    import json

    try:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(repo_id, "config.json", revision=revision or None)
    except Exception as exc:  # the hub raises many types: offline, unreachable, missing...
        error = hub_failure(exc, repo_id, revision, role)
        if error is not None:
            raise error from None
        return None
    check_cached_weights(repo_id, path, role)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def check_cached_weights(repo_id: str, config_path: str, role: str) -> None:
    """Offline, a Hub model whose config.json is cached needs its weights cached too."""
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE:
        return
    snapshot = Path(config_path).parent
    if not any(snapshot.glob("*.safetensors")):
        raise ModelError(
            f"The {role} '{repo_id}' is a Hugging Face Hub id whose config.json is in the local "
            f"Hugging Face cache ({snapshot}) but whose weights (*.safetensors) are not, while "
            "downloads are switched off (HF_HUB_OFFLINE is set).",
            hint=f"Unset HF_HUB_OFFLINE so that the run can download them, or set {role}.name "
                 "to a folder that holds the whole model.")


def _transformers_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("transformers")
    except PackageNotFoundError:
        return "?"


def known_model_types(allow_import: bool) -> set[str] | None:
    """The model types this transformers includes, read from its generated table
    (models/auto/auto_mappings.py) without importing transformers; where that file is absent
    (older versions) from configuration_auto when ``allow_import``; else None (unknown)."""
    if "types" in _MODEL_TYPES and _MODEL_TYPES["types"] is not None:
        return _MODEL_TYPES["types"]
    types: set[str] | None = None
    try:
        spec = importlib.util.find_spec("transformers")
        if spec is not None and spec.origin:
            table = Path(spec.origin).parent / "models" / "auto" / "auto_mappings.py"
            if table.is_file():
                mod_spec = importlib.util.spec_from_file_location("_kdstudio_auto_mappings",
                                                                  table)
                module = importlib.util.module_from_spec(mod_spec)
                mod_spec.loader.exec_module(module)  # type: ignore[union-attr]
                types = set(module.CONFIG_MAPPING_NAMES)
        if types is None and allow_import:
            from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

            types = set(CONFIG_MAPPING_NAMES)
    except Exception:  # noqa: BLE001 - an unreadable table only means the check is skipped
        types = None
    if types is not None:
        _MODEL_TYPES["types"] = types
    return types


def check_remote_code(facts: Any, trust: bool, role: str) -> None:
    """A model (preflight.ModelFacts, or None when its config is unknown) whose type
    transformers does not include loads only through the Python code it ships (config.json's
    auto_map), which runs only with trust_remote_code on; without such code not at all."""
    if facts is None:
        return
    name, config = facts.name, facts.config
    model_type = config.get("model_type")
    auto_map = config.get("auto_map")
    if not isinstance(model_type, str) or (trust and auto_map):
        return
    known = known_model_types(allow_import=bool(auto_map))
    if known is None or model_type in known:
        return
    arch = config.get("architectures")
    arch_text = f" ({', '.join(map(str, arch))})" if isinstance(arch, list) and arch else ""
    version = _transformers_version()
    if auto_map:
        code = ", ".join(sorted({str(v) if not isinstance(v, list) else str(v[0])
                                 for v in auto_map.values()}) if isinstance(auto_map, dict)
                         else [str(auto_map)])
        raise ModelError(
            f"The {role} '{name}' needs its own Python code to load: its config.json names the "
            f"model type '{model_type}'{arch_text}, which transformers {version} does not "
            f"include, and points to code shipped with the model ({code}), but "
            f"{role}.trust_remote_code is off.",
            hint=f"If you trust this model's code, set {role}.trust_remote_code = true (in the "
                 "app: 'Allow this model's own Python code'); otherwise choose a model that "
                 "transformers includes.")
    raise ModelError(
        f"The {role} '{name}' cannot load: its config.json names the model type "
        f"'{model_type}'{arch_text}, which transformers {version} does not include, and it "
        "ships no code of its own (no auto_map in config.json).",
        hint="If the model is newer than this transformers, upgrade it (pip install -U "
             "transformers); otherwise choose another model.")
