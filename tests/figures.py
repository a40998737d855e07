"""The figures delivery tests print (sent, delivered, lost, duplicated, faults
injected), gathered at the end of the run so that every run's output has them,
passing tests included (pytest shows a passing test's output only with -rA)."""

PREFIX = "figures | "


def show(name: str, counted: dict[str, int]) -> None:
    print(f"\n{PREFIX}{name}: " + ", ".join(f"{what} {n}" for what, n in counted.items()))


def gathered(terminalreporter) -> list[str]:
    """Every figures line the tests printed: passing tests' first, then failing ones'."""
    reports = [
        r for outcome in ("passed", "failed") for r in terminalreporter.stats.get(outcome, [])
    ]
    return [
        line.removeprefix(PREFIX)
        for report in reports
        for section, content in report.sections
        if section.startswith("Captured stdout")
        for line in content.splitlines()
        if line.startswith(PREFIX)
    ]
