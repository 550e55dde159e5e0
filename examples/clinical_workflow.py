"""Clinical workflow: branch on the patient's state, and keep the lineage.

Run: python examples/clinical_workflow.py
"""

import trio

from dagvisor import Pipeline, runtime, stage


@stage
async def admit(ctx):
    return dict(ctx.run_inputs["patient"])


@stage
async def triage(ctx):
    patient = ctx.inputs["admit"]
    if patient["spo2"] < 92 or patient["heart_rate"] > 120:
        await ctx.add_stage(icu_review, after=["triage"], reason=f"unstable: {patient}")
        await ctx.add_stage(
            notify_attending, after=["icu_review"], reason="escalation protocol"
        )
        branch = "icu"
    else:
        await ctx.add_stage(
            ward_round, after=["triage"], reason="stable: routine ward round"
        )
        branch = "ward"
    return branch


@stage
async def icu_review(ctx):
    return "ICU bed assigned"


@stage
async def notify_attending(ctx):
    return "attending paged"


@stage
async def ward_round(ctx):
    return "scheduled for the morning round"


pipeline = Pipeline("clinical").add(admit).add(triage, after=["admit"])


async def main() -> None:
    patients = [
        {"id": "p-17", "spo2": 89, "heart_rate": 131},
        {"id": "p-18", "spo2": 97, "heart_rate": 72},
    ]
    async with runtime() as rt:
        for patient in patients:
            result = await rt.run(pipeline, inputs={"patient": patient})
            print(f"{patient['id']}: branch {result.outputs['triage']}")
            for name, origin in result.origins.items():
                why = (
                    "pipeline"
                    if origin is None
                    else f"added by {origin.requester}: {origin.reason}"
                )
                print(f"   {name:<18} {result.states[name]:<10} {why}")


if __name__ == "__main__":
    trio.run(main)
