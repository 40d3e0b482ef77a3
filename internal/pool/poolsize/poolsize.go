// Package poolsize holds the largest size of chattyd's worker pool. It is
// apart from package pool, which supervises processes, so that the
// configuration, the control API and chattyctl check a size against the
// same limit without linking the supervisor and its dependencies.
package poolsize

// Max is the most worker slots a pool can have.
const Max = 10000
