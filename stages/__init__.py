"""DVC entry points: one module per dvc.yaml stage, each with run(...) and main()."""
