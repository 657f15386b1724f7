"""The component's export (componentize-py finds `Transform` in the entry module)."""
from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import types

import sluice_plugin as _sdk


class Transform(exports.Transform):
    def init(self, params):
        message = _sdk._run_init(params)
        if message is not None:
            raise Err(message)

    def process(self, batch):
        outcomes, outputs, data = _sdk._process(
            batch.topic, batch.partition, batch.offsets, batch.timestamps, batch.spans, batch.header_spans, batch.data
        )
        return types.BatchResult(outcomes, outputs, data)
