//go:build !failpoints

package failpoint

// Enabled tells whether this build has failpoints.
const Enabled = false

// Inject is compiled out of release builds.
func Inject(string) error { return nil }

// UseFile does nothing without failpoints.
func UseFile(string) {}

// Set needs a failpoints build; without one it panics, so a test that
// relies on a point cannot pass by accident.
func Set(string, string) func() { panic(errNotBuilt) }

// SetFunc needs a failpoints build, as Set does.
func SetFunc(string, func() error) func() { panic(errNotBuilt) }

const errNotBuilt = "failpoint: this binary was built without failpoints; build and test with -tags failpoints (make test does)"
