"""A scripted model for engine tests: it follows one token sequence, so a test can check what an engine feeds."""
import torch


class Scripted(torch.nn.Module):
    """A model that follows one token sequence: at every position whose history is a prefix of `script`
    it predicts the script's next token, anywhere else EOS. An engine that feeds anything but the script,
    in order, gets EOS back and ends its fills early. Records every token fed, by position."""

    def __init__(self, config, script: list[int], eos: int):
        super().__init__()
        self.config, self.script, self.eos = config, script, eos
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # a device and dtype for the engine
        self.seen: list[int] = []

    def forward(self, tokens, start_pos=0, cache=None, last_only=False):
        fed = tokens[0].tolist()
        del self.seen[start_pos:]
        self.seen += fed
        rows = []
        for p in range(start_pos, start_pos + len(fed)):
            on_script = self.seen[:p + 1] == self.script[:p + 1] and p + 1 < len(self.script)
            logits = torch.full((self.config.vocab_size,), -10.0)
            logits[self.script[p + 1] if on_script else self.eos] = 10.0
            rows.append(logits)
        out = torch.stack(rows)[None].expand(tokens.shape[0], -1, -1)
        return out[:, -1:] if last_only else out
