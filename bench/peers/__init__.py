"""
imageproto against a plain blocking socket, imagezmq (REQ/REP and PUB/SUB)
and vidgear's NetGear, on the same frames, in one command::

    pip install -r bench/requirements.txt
    python -m bench.peers [--repeat 3] [--frames N] [--scenarios S1,S2]
        [--peers plain,imageproto] [--json out.json]

Modules: L{bench.peers.common} (frames, figures, the table: pure
functions), L{bench.peers.child} (the sender and receiver processes of
every peer), L{bench.peers.imageproto_side} (imageproto's ends, and the one
adapter naming imageproto's internal modules), L{bench.peers.zmq_side}
(imagezmq and NetGear), L{bench.peers.run} (runs them and prints the table).
See C{bench/README.md}, "Against imagezmq and NetGear".
"""
