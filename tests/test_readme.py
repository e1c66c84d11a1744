"""
The README documents every twistd option of both plugins.
"""

import os

from twisted.trial.unittest import SynchronousTestCase

from imageproto.tap import receiver, sender, worker

README = os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")


def longOptions(optionsClass) -> set[str]:
    options = optionsClass()
    names = {name for name in options.longOpt}
    return {"--" + name.rstrip("=") for name in names} - {"--help", "--version"}


class ReadmeTests(SynchronousTestCase):
    def test_everyOptionDocumented(self):
        """
        Each long option of C{twistd imageproto}, C{twistd
        imageproto-sender} and C{twistd imageproto-worker} appears in
        README.md.
        """
        with open(README, encoding="utf-8") as f:
            text = f.read()
        for optionsClass in (receiver.Options, sender.Options, worker.Options):
            options = longOptions(optionsClass)
            self.assertGreater(len(options), 10)
            missing = sorted(o for o in options if o + "=" not in text and o + " " not in text)
            self.assertEqual(missing, [], f"{optionsClass.__module__} options missing")
