package workqueue

// ring is a double-ended queue of T on a circular buffer that grows by
// doubling. The zero value is empty and ready to use.
type ring[T any] struct {
	buf  []T
	head int // index of the front element
	n    int // number of elements
}

func (r *ring[T]) len() int { return r.n }

// at returns the i-th element from the front.
func (r *ring[T]) at(i int) T { return r.buf[(r.head+i)%len(r.buf)] }

func (r *ring[T]) grow(need int) {
	if r.n+need <= len(r.buf) {
		return
	}
	size := max(16, 2*len(r.buf))
	for size < r.n+need {
		size *= 2
	}
	nb := make([]T, size)
	for i := range r.n {
		nb[i] = r.at(i)
	}
	r.buf, r.head = nb, 0
}

// pushBack adds v at the back.
func (r *ring[T]) pushBack(v T) {
	r.grow(1)
	r.buf[(r.head+r.n)%len(r.buf)] = v
	r.n++
}

// pushFront adds vs at the front, in their order: vs[0] becomes the front.
func (r *ring[T]) pushFront(vs []T) {
	r.grow(len(vs))
	for i := len(vs) - 1; i >= 0; i-- {
		r.head = (r.head - 1 + len(r.buf)) % len(r.buf)
		r.buf[r.head] = vs[i]
		r.n++
	}
}

// popFront removes and returns the front element; the ring must not be
// empty.
func (r *ring[T]) popFront() T {
	var zero T
	v := r.buf[r.head]
	r.buf[r.head] = zero
	r.head = (r.head + 1) % len(r.buf)
	r.n--
	return v
}

// takeAll removes every element and returns them in order.
func (r *ring[T]) takeAll() []T {
	out := make([]T, r.n)
	for i := range out {
		out[i] = r.popFront()
	}
	return out
}
