"""``python -m llm_glossary`` runs the ``llm-glossary`` command (also under torchrun)."""

if __name__ == "__main__":  # pytest's doctest collection imports this module: do nothing then
    from llm_glossary.cli import main

    raise SystemExit(main())
