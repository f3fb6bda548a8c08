"""Reference implementations the tests check the pipeline against (never imported by shipped code;
``bench.preprocess`` races ``original_bert`` as its baseline). Tests import them as ``oracles.*``
(``tests/`` is on sys.path through its conftest); from the repository root, ``tests.oracles.*``."""
