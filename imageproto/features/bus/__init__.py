"""
The Redis Streams frame bus: receivers publish accepted frames, a fleet of
C{imageproto-worker} processes runs the detector on them, and each RESULT
goes back to the receiver holding the sender's connection.  See the README's
"Scaling out with Redis".
"""
