"""
Small rules the other layers share, each written once: JPEG codec calls
(L{imageproto.common.jpeg}), atomic file writes, percentiles and the reactor
fallback.  Nothing here imports the rest of the package.
"""
