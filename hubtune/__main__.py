"""``python -m hubtune`` (also what ``torchrun -m hubtune`` runs)."""

from hubtune.cli import main

if __name__ == "__main__":
    main()
