// Command tms is the admin's command line for tms. See `tms --help`.
package main

import (
	"os"

	"tms/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:])) }
