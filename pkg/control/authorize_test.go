package control

import (
	"errors"
	"testing"
)

func TestMayChange(t *testing.T) {
	groups := func(uid uint32) ([]string, error) {
		switch uid {
		case 1001:
			return []string{"1001", "500"}, nil
		case 1002:
			return []string{"1002"}, nil
		}
		return nil, errors.New("unknown user")
	}
	withGroup := authorizer{euid: 999, gid: 500, group: "chatty", groupIDs: groups}
	noGroup := authorizer{euid: 999, gid: -1, groupIDs: groups}
	tests := []struct {
		name    string
		a       authorizer
		p       peer
		want    bool
		wantErr bool
	}{
		{"unknown peer", withGroup, peer{}, false, false},
		{"root", noGroup, peer{known: true, uid: 0, gid: 0}, true, false},
		{"daemon's user", noGroup, peer{known: true, uid: 999, gid: 999}, true, false},
		{"other without group configured", noGroup, peer{known: true, uid: 1001, gid: 500}, false, false},
		{"primary group", withGroup, peer{known: true, uid: 1003, gid: 500}, true, false},
		{"supplementary group", withGroup, peer{known: true, uid: 1001, gid: 1001}, true, false},
		{"not a member", withGroup, peer{known: true, uid: 1002, gid: 1002}, false, false},
		{"unknown user", withGroup, peer{known: true, uid: 4000, gid: 4000}, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.a.mayChange(tt.p)
			if got != tt.want || (err != nil) != tt.wantErr {
				t.Fatalf("mayChange(%+v) = %v, %v; want %v, error %v", tt.p, got, err, tt.want, tt.wantErr)
			}
		})
	}
}
