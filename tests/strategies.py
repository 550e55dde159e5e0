"""Hypothesis strategies shared by the property-based tests."""

from __future__ import annotations

from hypothesis import strategies as st

# Stage names drawn from a small alphabet, so that draws often collide with
# existing stages (duplicates, edges between existing stages, cycles).
stage_names = st.sampled_from([f"s{i}" for i in range(12)])


@st.composite
def small_pipelines(
    draw: st.DrawFn, max_stages: int = 4
) -> list[tuple[str, tuple[str, ...]]]:
    """A pipeline as ``[(name, deps)]``, each stage after some earlier ones."""
    count = draw(st.integers(1, max_stages))
    stages: list[tuple[str, tuple[str, ...]]] = []
    for i in range(count):
        earlier = [name for name, _ in stages]
        deps = (
            draw(st.lists(st.sampled_from(earlier), unique=True, max_size=2))
            if earlier
            else []
        )
        stages.append((f"p{i}", tuple(deps)))
    return stages


# Any text Python can hold, lone surrogates included (os.listdir() returns
# them for file names that are not UTF-8); non-blank, as names must be.
any_text = st.text(
    st.characters(exclude_categories=()), min_size=1, max_size=24
).filter(lambda text: bool(text.strip()))
