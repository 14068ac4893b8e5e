"""Group reweighting (RWG): batches drawn so that every group is equally likely.

Example i is drawn with probability proportional to 1 / |group(i)|. groups="true" uses the data's
group labels (oracle); groups="inferred" uses phase-1 inferred groups (XRM+RWG).
"""
from .base import GROUP_SOURCES, Method, WeightedSampler, group_balanced_weights, register


@register()
@register("xrm+rwg", groups="inferred")
class RWG(Method):
    name = "rwg"
    needs_groups = True
    defaults = {"groups": "true"}
    choices = {"groups": GROUP_SOURCES}
    batched = True

    def sampling_weights(self):
        return group_balanced_weights(self.ctx.groups.cpu(), self.ctx.n_groups)

    def sampler(self, batch_size):
        return WeightedSampler(self.sampling_weights(), batch_size, self.ctx.generator)
