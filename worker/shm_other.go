//go:build !linux

package worker

// shmOffer is a receiving rank's shared-memory ring; there is none on
// this platform, so every link uses its socket.
type shmOffer struct {
	region *shmRegion
	text   string
}

func newShmOffer(int) (*shmOffer, error) { return nil, errNoShm }

func (o *shmOffer) closeFd() {}
func (o *shmOffer) drop()    {}

func openShmOffer(string) (*shmRegion, error) { return nil, errShmElsewhere }
