"""
Small rules the other layers share, each written once:

  - L{imageproto.common.jpeg}: the JPEG codec calls;
  - L{imageproto.common.files}: atomic, durable file writes (bytes, JSON);
  - L{imageproto.common.numbers}: the nearest-rank percentile;
  - L{imageproto.common.reactor}: the fallback to the global reactor;
  - L{imageproto.common.buffers}: what is left of a gathered write.

Nothing here imports the rest of the package, Twisted's reactor or OpenCV at
import time.
"""
