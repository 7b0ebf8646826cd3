"""llm_glossary: the tested implementation behind every glossary page."""
