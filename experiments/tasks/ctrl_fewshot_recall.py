"""Diagnose the control task ctrl_fewshot_recall (design category_fewshot) on the model
organisms; extra flags go to `diagnose run` (e.g. --out DIR, --family F)."""

import sys

from experiments.tasks import diagnose_task

if __name__ == "__main__":
    sys.exit(diagnose_task("ctrl_fewshot_recall"))
