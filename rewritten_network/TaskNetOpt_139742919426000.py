import sys
import mindspore
from mindspore import nn
from mindspore.nn import Cell
from mindspore.ops import functional as F
#
#
sys.path.insert(0, '/work/main/src')
from src.ipt import TaskNet

class TaskNetOpt(TaskNet, nn.Cell):

    def __init__(self, obj) -> None:
        nn.Cell.__init__(self)
        for key, value in obj.__dict__.items():
            setattr(self, key, value)

    def construct(self, x):
        out, tokens = self.model.forward_slot(x, self.slot)
        if self.with_tokens:
            tuple_var = (out, tokens)
            return tuple_var
        return out
#