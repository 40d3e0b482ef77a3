package feed

import "context"

// interruptWhenDone calls interrupt, which unblocks a read, once ctx is
// done. The release it returns, which the caller defers, cancels that or,
// if interrupt has been called, waits for it to return, so that nothing
// touches the file once the caller closes it.
func interruptWhenDone(ctx context.Context, interrupt func()) (release func()) {
	called := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(called)
		interrupt()
	})
	return func() {
		if !stop() {
			<-called
		}
	}
}
