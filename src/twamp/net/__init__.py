"""asyncio I/O around the sans-I/O core: the TWAMP Server (`net.server`), the Control-Client
(`net.client`) and the perfSONAR key file parser (`net.keyfile`). Import the submodules directly.
"""
