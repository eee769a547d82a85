//go:build race

package worker

// raceScale is 1 under the race detector.
const raceScale = 1
