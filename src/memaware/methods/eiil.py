"""Group methods on EIIL's inferred groups (`eiil+groupdro`, `eiil+rwg`, `eiil+subg`; `eiil+irm` is in irm).

With groups="eiil" the loop infers the training groups by EIIL (`memaware.heldout.eiil`) from the
train split's labels, with no group labels and no phase 1.
"""
from .base import register
from .groupdro import GroupDRO
from .rwg import RWG
from .subg import SUBG

for _name, _cls in (("eiil+groupdro", GroupDRO), ("eiil+rwg", RWG), ("eiil+subg", SUBG)):
    register(_name, groups="eiil")(_cls)
