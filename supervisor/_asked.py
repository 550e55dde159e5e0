"""What a change asked and what pipeline a run started with, as the journal keeps them.

Pure data built on the supervisor from what the requester prepared: a
request's record (`asked`) is enough to replay it on a resume, and the
pipeline's (`pipeline_record`) keeps each distinct spec once. `RunRecords`
(`_run_records`) writes them into the run's records.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, assert_never

from dagvisor.actors._messages import (
    AddEdge,
    AddStage,
    CancelRun,
    CancelStage,
    ChangeSet,
    Expand,
    RemoveStage,
    ReplacePending,
)

from ._stage_refs import spec_ref

if TYPE_CHECKING:
    from dagvisor.actors import Pipeline, StageRegistry, StageSpec
    from dagvisor.actors._messages import ChangePart, Request

__all__ = ["asked", "pipeline_record", "spec_ref_or_options"]


def asked(request: Request | ChangePart, mapped: set[int]) -> dict[str, Any]:
    """What a request asked, as the journal keeps it: enough to replay it.

    Stage specs travel as the references the requester computed (never
    recomputed here: that would run user code on the supervisor). The items
    of the expansions that added stages (``mapped``, by id) are the "item"
    events written just before the record; their count is recorded here.
    """
    match request:
        case AddStage():
            return {
                "spec": spec_ref_or_options(request.spec, request.ref),
                "after": list(request.after),
                "before": list(request.before),
            }
        case AddEdge():
            return {"upstream": request.upstream, "downstream": request.downstream}
        case Expand():
            applied = id(request) in mapped and request.encoded is not None
            return {
                "spec": spec_ref_or_options(request.spec, request.ref),
                "keys": list(request.keys),
                "after": list(request.after),
                "items": {"events": len(request.encoded or ()) if applied else 0},
            }
        case RemoveStage() | CancelStage():
            return {"name": request.name}
        case ReplacePending():
            entries = list(request.pipeline.entries())
            refs = request.refs or [None] * len(entries)
            return {
                "pipeline": request.pipeline.name,
                "stages": [
                    {"spec": spec_ref_or_options(spec, ref), "after": list(deps)}
                    for (spec, deps), ref in zip(entries, refs, strict=True)
                ],
            }
        case CancelRun():
            return {}
        case ChangeSet():
            return {
                "parts": [
                    {"kind": part.kind, **asked(part, mapped)} for part in request.parts
                ]
            }
        case _:
            assert_never(request)


def spec_ref_or_options(spec: StageSpec, ref: dict[str, Any] | None) -> dict[str, Any]:
    """The reference the requester computed for ``spec``, else its options alone."""
    # Without a reference (a run without a journal, or a request refused
    # before it was prepared) the options alone are recorded.
    return ref if ref is not None else spec_ref(spec, None)


def pipeline_record(
    pipeline: Pipeline, registry: StageRegistry | None
) -> dict[str, Any]:
    """The pipeline a run starts with, as its first record keeps it.

    Each distinct spec once, then the stages as ``[name, spec index,
    [after...]]``: a million copies of one function cost a million short
    rows, not a million spec records.
    """
    index: dict[tuple[Any, ...], int] = {}
    specs: list[dict[str, Any]] = []
    stages: list[list[Any]] = []
    for spec, deps in pipeline.entries():
        template = (
            spec.fn,
            spec.when,
            spec.retries,
            spec.backoff,
            spec.timeout,
            spec.trigger,
            spec.executor,
            None if spec.codec is None else spec.codec.name,
            spec.persist,
            spec.params_key,
            spec.limit,
        )
        position = index.get(template)
        if position is None:
            position = index[template] = len(specs)
            ref = spec_ref(spec, registry)
            del ref["name"]
            specs.append(ref)
        stages.append([spec.name, position, list(deps)])
    return {"specs": specs, "stages": stages}
