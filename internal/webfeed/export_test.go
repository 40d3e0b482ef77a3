package webfeed

// SetUpgradedHook sets a function that runs after each upgrade, before
// the connection is handed on; nil removes it.
func SetUpgradedHook(f func()) {
	if f == nil {
		testHookUpgraded.Store(nil)
		return
	}
	testHookUpgraded.Store(&f)
}
