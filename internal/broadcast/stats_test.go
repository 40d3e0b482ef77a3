package broadcast

import (
	"reflect"
	"testing"
)

// Add sums every counter of Stats: each field is set to a different value
// in both operands, so a field Add forgets keeps its first value and
// fails, and a field of a kind this test cannot set fails too.
func TestStatsAddSumsEveryField(t *testing.T) {
	var a, b Stats
	va, vb := reflect.ValueOf(&a).Elem(), reflect.ValueOf(&b).Elem()
	typ := va.Type()
	for i := range typ.NumField() {
		switch f := typ.Field(i); f.Type.Kind() {
		case reflect.Int, reflect.Int64:
			va.Field(i).SetInt(int64(100 + i))
			vb.Field(i).SetInt(int64(1000 * (i + 1)))
		case reflect.Uint64:
			va.Field(i).SetUint(uint64(100 + i))
			vb.Field(i).SetUint(uint64(1000 * (i + 1)))
		default:
			t.Fatalf("Stats.%s is a %s: teach Add and this test how to add it", f.Name, f.Type)
		}
	}
	sum := a
	sum.Add(b)
	vs := reflect.ValueOf(sum)
	for i := range typ.NumField() {
		want := uint64(100+i) + uint64(1000*(i+1))
		var got uint64
		if vs.Field(i).CanInt() {
			got = uint64(vs.Field(i).Int())
		} else {
			got = vs.Field(i).Uint()
		}
		if got != want {
			t.Errorf("Add: %s = %d, want %d", typ.Field(i).Name, got, want)
		}
	}
}
