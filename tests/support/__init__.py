"""What the tests share: fixtures' helpers, event builders, ground truths and the processes tests run.

Test modules import from here and never from each other (tests/test_house_rules.py checks it).
"""
