"""Where job images run: the Dramatiq broker and actors, `samsvc worker`'s process (`main`, the
module Dramatiq's CLI imports; `supervisor`; its metrics and presence), and the in-process mode's
in-process workers."""
