"""Make executed notebooks fit to commit: no widget state, no run timestamps, kernel `python3`.

Outputs stay (they are the real run a reader sees on GitHub); the test suite checks that no
output names an absolute path of the machine that produced it.
"""

import json
import sys


def clean(path: str) -> None:
    with open(path, encoding="utf-8") as f:
        nb = json.load(f)
    nb["metadata"].pop("widgets", None)
    nb["metadata"]["kernelspec"] = {"display_name": "Python 3", "language": "python",
                                    "name": "python3"}
    for cell in nb["cells"]:
        cell.get("metadata", {}).pop("execution", None)
        for out in cell.get("outputs", []):
            # widget views reference state we just dropped: keep their plain-text fallback
            data = out.get("data", {})
            data.pop("application/vnd.jupyter.widget-view+json", None)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(nb, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    for p in sys.argv[1:]:
        clean(p)
