"""Clinical workflow: branch on the patient's state and a clinician's sign-off.

An unstable patient waits for a clinician's sign-off, a signal sent to the
run from outside (here from this program's own task, standing in for a
clinician's tool): it steers the branch, and the audit trail keeps who sent
it, when, why and what it said.

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
    if unstable(patient):
        await ctx.add_stage(
            sign_off, after=["triage"], reason=f"unstable: {patient}; needs a sign-off"
        )
        branch = "escalation"
    else:
        await ctx.add_stage(
            ward_round, after=["triage"], reason="stable: routine ward round"
        )
        branch = "ward"
    return branch


def unstable(patient) -> bool:
    return patient["spo2"] < 92 or patient["heart_rate"] > 120


@stage
async def sign_off(ctx):
    decision = await ctx.wait_signal("sign_off")  # the clinician's, from outside
    by = decision["by"]
    if decision["icu"]:
        await ctx.add_stage(
            icu_review, after=["sign_off"], reason=f"signed off by {by}"
        )
        await ctx.add_stage(
            notify_attending, after=["icu_review"], reason="escalation protocol"
        )
    else:
        await ctx.add_stage(ward_round, after=["sign_off"], reason=f"declined by {by}")
    return decision


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
            run = await rt.start(pipeline, inputs={"patient": patient})
            if unstable(patient):
                await run.signal(
                    "sign_off",
                    {"by": "dr-okafor", "icu": True},
                    reason="reviewed the vitals at the bedside",
                )
            result = await run.wait()
            print(f"{patient['id']}: branch {result.outputs['triage']}")
            for record in result.audit:
                if record.kind == "signal":
                    print(f"   {record}")
            for name, origin in result.origins.items():
                why = (
                    "pipeline"
                    if origin is None
                    else f"added by {origin.requester}: {origin.reason}"
                )
                print(f"   {name:<18} {result.states[name]:<10} {why}")


if __name__ == "__main__":
    trio.run(main)
