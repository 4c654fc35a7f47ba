"""The Brian2 engine: CLAPP networks built from the model files, on the runtime or cpp_standalone device.

Importing this package does not import Brian2; the engine imports it when it builds a network.
"""

import warnings

# brian2 2.8 imports setuptools' MSVC helper on every platform, which warns about a private name.
warnings.filterwarnings("ignore", message="_get_vc_env is private", category=UserWarning)
