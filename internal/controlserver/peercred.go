package controlserver

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/user"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"
)

// peer is what the kernel says about the process at the other end.
type peer struct {
	known    bool // whether SO_PEERCRED answered
	pid      int32
	uid, gid uint32
}

func (p peer) String() string {
	if !p.known {
		return "unknown peer"
	}
	return fmt.Sprintf("uid %d (pid %d)", p.uid, p.pid)
}

type peerKey struct{}

// connContext is http.Server.ConnContext: it reads the peer's credentials
// once per connection and keeps them in the context of its requests.
func connContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, peerKey{}, peerOf(c))
}

func peerOf(c net.Conn) peer {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return peer{}
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return peer{}
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || credErr != nil {
		return peer{}
	}
	return peer{known: true, pid: cred.Pid, uid: cred.Uid, gid: cred.Gid}
}

func peerFrom(ctx context.Context) peer {
	p, _ := ctx.Value(peerKey{}).(peer)
	return p
}

// authorizer decides who may change things: root, the daemon's own user
// and the members of one group.
type authorizer struct {
	euid  uint32
	gid   int // -1: no group
	group string
	// groupIDs returns the supplementary groups of a user; os/user in
	// production, replaceable in tests.
	groupIDs func(uid uint32) ([]string, error)
}

func newAuthorizer(group string) (authorizer, error) {
	a := authorizer{euid: uint32(os.Geteuid()), gid: -1, group: group, groupIDs: userGroupIDs}
	if group != "" {
		gid, err := lookupGroup(group)
		if err != nil {
			return a, err
		}
		a.gid = gid
	}
	return a, nil
}

func userGroupIDs(uid uint32) ([]string, error) {
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return nil, err
	}
	return u.GroupIds()
}

// mayChange reports whether p may send, scale or stop. The error, when not
// nil, says why a group lookup failed; the answer is then false.
func (a authorizer) mayChange(p peer) (bool, error) {
	if !p.known {
		return false, nil
	}
	if p.uid == 0 || p.uid == a.euid {
		return true, nil
	}
	if a.gid < 0 {
		return false, nil
	}
	if int(p.gid) == a.gid {
		return true, nil
	}
	ids, err := a.groupIDs(p.uid)
	if err != nil {
		return false, fmt.Errorf("groups of uid %d: %w", p.uid, err)
	}
	return slices.Contains(ids, strconv.Itoa(a.gid)), nil
}

// denial is the message a refused peer reads.
func (a authorizer) denial(p peer) string {
	who := "this process"
	if p.known {
		who = fmt.Sprintf("uid %d", p.uid)
	}
	if a.gid < 0 {
		return fmt.Sprintf("permission denied: %s may only read; changes need root or chattyd's own user (uid %d)", who, a.euid)
	}
	return fmt.Sprintf("permission denied: %s may only read; changes need root, chattyd's own user (uid %d) or membership of group %s", who, a.euid, a.group)
}
