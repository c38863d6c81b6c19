/*
 * scand: the scanning process.  It runs in its own root with a private
 * tmp (for libclamav) and serves the netd workers.  The content pipeline
 * comes with the scanning issues; today it holds its channels and config
 * under its real sandbox.
 */
#include "parent.h"
#include "proc.h"

static void
scand_peer_frame(struct proc_chan *c, struct imsg *imsg)
{
	if (proc_peer_common(c, imsg))
		return;
	proc_chan_fail(c, "unexpected %s from peer",
	    imsg_type_name(imsg->hdr.type));
}

int
scand_main(int instance, int debug, int verbose)
{
	return proc_worker_main(ROLE_SCAND, instance, debug, verbose,
	    scand_peer_frame);
}
