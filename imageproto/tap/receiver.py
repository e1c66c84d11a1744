from twisted.python import usage
class Options(usage.Options):
    pass
def makeService(options):
    raise NotImplementedError
