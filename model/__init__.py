"""TraMP-Former network, preprocessing contract, ONNX export and onnxruntime scoring.

`model/` imports none of the project's other packages.
"""
