"""The IR: types, values, nodes, graphs, their text and JSON forms."""
from .graph import Graph, GraphError, Node, Value
from .printer import format_graph
from .serialize import SCHEMA_VERSION, graph_from_json, graph_to_json
from .types import DTYPES, DType, TensorType, bool_, dtype_of, float32, float64, int32, int64, promote

__all__ = [
    "DTYPES", "DType", "Graph", "GraphError", "Node", "SCHEMA_VERSION", "TensorType", "Value", "bool_",
    "dtype_of", "float32", "float64", "format_graph", "graph_from_json", "graph_to_json", "int32", "int64", "promote",
]
